"""Latency measurement with perf_analyzer's stability rule, interleaving the compared candidates.

Each window runs every candidate in turn, request by request (A, B, C, A, B, C, ...), so slow
drifts of a shared, noisy machine hit all of them alike. Windows repeat until, for every candidate,
throughput and p50 of the last three windows lie within `tolerance` of their mean, or until
`max_windows`; the result says which happened.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)
STABLE_WINDOWS = 3


@dataclass(frozen=True)
class WindowPolicy:
    window_seconds: float = 2.0
    max_windows: int = 10
    tolerance: float = 0.10
    warmup_iterations: int = 10
    min_iterations_per_window: int = 5

    @classmethod
    def quick(cls) -> WindowPolicy:
        return cls(
            window_seconds=0.1, max_windows=3, warmup_iterations=2, min_iterations_per_window=2
        )


def latency_stats(seconds: Sequence[float], items_per_call: int) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    stats = {f"p{p}_ms": round(float(np.percentile(ms, p)), 3) for p in PERCENTILES}
    stats["mean_ms"] = round(float(ms.mean()), 3)
    stats["utterances_per_s"] = round(items_per_call * len(ms) / (ms.sum() / 1000.0), 1)
    return stats


def is_stable(windows: list[dict[str, float]], tolerance: float) -> bool:
    if len(windows) < STABLE_WINDOWS:
        return False
    last = windows[-STABLE_WINDOWS:]
    for key in ("utterances_per_s", "p50_ms"):
        values = np.array([w[key] for w in last])
        if np.abs(values - values.mean()).max() > tolerance * values.mean():
            return False
    return True


def measure_interleaved(
    candidates: dict[str, Callable[[list[str]], object]],
    batches: list[list[str]],
    policy: WindowPolicy,
) -> dict[str, dict]:
    """Stats per candidate over its last three windows (or all, when never stable)."""
    cycle = itertools.cycle(batches)
    for _ in range(policy.warmup_iterations):
        batch = next(cycle)
        for run in candidates.values():
            run(batch)
    samples: dict[str, list[list[float]]] = {name: [] for name in candidates}
    windows: dict[str, list[dict[str, float]]] = {name: [] for name in candidates}
    stable = False
    while not stable and len(next(iter(windows.values()))) < policy.max_windows:
        current = {name: [] for name in candidates}
        started = time.perf_counter()
        while (
            time.perf_counter() - started < policy.window_seconds * len(candidates)
            or len(next(iter(current.values()))) < policy.min_iterations_per_window
        ):
            batch = next(cycle)
            for name, run in candidates.items():
                t0 = time.perf_counter()
                run(batch)
                current[name].append(time.perf_counter() - t0)
        for name, times in current.items():
            samples[name].append(times)
            windows[name].append(latency_stats(times, len(batches[0])))
        stable = all(is_stable(w, policy.tolerance) for w in windows.values())
    used = STABLE_WINDOWS if stable else len(next(iter(windows.values())))
    return {
        name: {
            **latency_stats(list(itertools.chain(*samples[name][-used:])), len(batches[0])),
            "windows": len(windows[name]),
            "stable": stable,
            "iterations": sum(len(s) for s in samples[name][-used:]),
        }
        for name in candidates
    }
