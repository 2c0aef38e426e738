"""How much CPU this process may really use: the container's CPU limit (cgroup v2 `cpu.max`, or
v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`) and its CPU affinity, not the host's core count.

ONNX Runtime sizes its thread pool from the host's cores by default: under a Kubernetes CPU limit
of 2 on a 64-core node that is 64 threads fighting over 2 CPUs' worth of quota, and idle threads
that spin-wait burn the quota itself.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """CPUs' worth of time the cgroup may use per period, or None when unlimited or unknown."""
    v2 = cgroup / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100_000)
    quota_file, period_file = (
        cgroup / "cpu" / "cpu.cfs_quota_us",
        cgroup / "cpu" / "cpu.cfs_period_us",
    )
    if quota_file.is_file() and period_file.is_file():
        quota = int(quota_file.read_text())
        return None if quota <= 0 else quota / int(period_file.read_text())
    return None


def usable_cpus(cgroup: Path = CGROUP) -> int:
    """Whole CPUs this process may use: the affinity set, capped by the quota (at least 1)."""
    affinity = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup)
    return max(1, min(affinity, math.floor(quota)) if quota is not None else affinity)
