"""Provenance recorded in every result file: command, commit, date, machine, package versions."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from service.contract.paths import PROJECT_ROOT

PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "onnxruntime",
    "onnx",
    "numpy",
    "seqeval",
    "grpcio",
)


def git_commit() -> str:
    """HEAD, suffixed with '-dirty' when tracked code differs from it (result files written by an
    earlier suite of the same run do not count)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    changed = git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"
    )
    return commit + ("-dirty" if changed else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_meta() -> dict:
    return {
        "command": shlex.join(["python", *sys.orig_argv[1:]]),
        "git_commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "packages": package_versions(),
    }
