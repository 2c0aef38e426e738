"""CPU seconds a server spends, its child processes included (Triton's backend stubs, MLServer's
inference workers), read from /proc through psutil."""

from __future__ import annotations

import psutil


def tree_cpu_s(pid: int) -> float:
    """User + system CPU of `pid` and every live descendant."""
    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total
