"""Closed-loop levels measured the way perf_analyzer does, for one target or several side by
side: at each concurrency a warm-up, then windows until throughput and p50 are stable (10 % over
the last three) or a cap; several targets take turns window by window (A, B, C, then B, C, A,
...) so slow drifts of a shared machine hit all alike. A row: throughput, p50/p90/p99 of the
answered calls, errors by code, the server's CPU per 1,000 answers (when its pid is known) and
the load generator's CPU share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from benchmarks.load.calls import percentile_ms
from benchmarks.load.cpu import tree_cpu_s
from benchmarks.load.loops import Window, closed_loop
from benchmarks.load.measure import STABLE_WINDOWS, is_stable
from benchmarks.load.targets import Target


def window_stats(windows: list[tuple[Window, float | None]]) -> dict:
    """One row from the windows used, each with the server's CPU seconds over it (None: not
    known, a remote server): latency percentiles of the answered calls, throughput, errors by
    code, server CPU per 1,000 answers, the load generator's CPU share (of one core)."""
    calls = [c for w, _ in windows for c in w.calls]
    answered = [c.seconds for c in calls if c.code == "OK"]
    wall = sum(w.wall_s for w, _ in windows)
    errors: dict[str, int] = {}
    for call in calls:
        if call.code != "OK":
            errors[call.code] = errors.get(call.code, 0) + 1
    cpus = [cpu for _, cpu in windows]
    server_cpu = None if None in cpus else sum(cpus)  # type: ignore[arg-type]
    return {
        "throughput_rps": round(len(answered) / wall, 1),
        "p50_ms": percentile_ms(answered, 50),
        "p90_ms": percentile_ms(answered, 90),
        "p99_ms": percentile_ms(answered, 99),
        "errors": len(calls) - len(answered),
        "errors_by_code": errors,
        "server_cpu_s_per_1k": (
            round(1000 * server_cpu / max(1, len(answered)), 2) if server_cpu is not None else None
        ),
        "server_cores_busy": round(server_cpu / wall, 2) if server_cpu is not None else None,
        "load_cpu_share": round(sum(w.cpu_s for w, _ in windows) / wall, 3),
        "requests": len(calls),
    }


def with_server_cpu(pid: int | None, run: Callable[[], Window]) -> tuple[Window, float | None]:
    """The window `run` measures, and the server's CPU seconds over it (None: no pid)."""
    if pid is None:
        return run(), None
    cpu0 = tree_cpu_s(pid)
    window = run()
    return window, tree_cpu_s(pid) - cpu0


def measured_window(
    target: Target, pid: int | None, texts: list[str], concurrency: int, seconds: float
) -> tuple[Window, float | None]:
    return with_server_cpu(
        pid, lambda: asyncio.run(closed_loop(target, texts, concurrency, seconds))
    )


def sweep(
    servers: dict[str, tuple[Target, int | None]],
    texts: list[str],
    levels: tuple[int, ...] | list[int],
    window_s: float,
    max_windows: int,
    warmup_s: float | None = None,
) -> list[dict]:
    """Rows per (server, concurrency); `servers` maps a name to (target, server pid or None).
    The warm-up at each level lasts `warmup_s` (default: half a window)."""
    rows = []
    names = list(servers)
    for concurrency in levels:
        for target, _ in servers.values():
            asyncio.run(closed_loop(target, texts, concurrency, warmup_s or window_s / 2))
        windows: dict[str, list] = {n: [] for n in names}
        stats: dict[str, list[dict]] = {n: [] for n in names}
        for turn in range(max_windows):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                target, pid = servers[name]
                window, cpu = measured_window(target, pid, texts, concurrency, window_s)
                windows[name].append((window, cpu))
                ok = [c.seconds for c in window.calls if c.code == "OK"]
                stats[name].append(
                    {
                        "utterances_per_s": len(ok) / window.wall_s,
                        "p50_ms": percentile_ms(ok, 50) or 0.0,
                    }
                )
            if all(is_stable(stats[n], 0.10) for n in names):
                break
        for name in names:
            stable = is_stable(stats[name], 0.10)
            used = windows[name][-STABLE_WINDOWS:] if stable else windows[name]
            rows.append(
                {
                    "server": name,
                    "concurrency": concurrency,
                    **window_stats(used),
                    "windows": len(windows[name]),
                    "stable": stable,
                }
            )
    return rows
