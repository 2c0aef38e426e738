"""Suite `overload`: the server at about three times its capacity.

    python -m benchmarks overload --bundle bundles/atis [--seconds 10] [--workers 2]

For each admission setting (the queue length alone, and `max_queue_wait_ms`): capacity and p99
from a closed loop at the saturation concurrency; then an open-loop offered load of `--multiple`
× capacity from `--workers` processes (a Python load generator on the same cores as the server
may not reach it: offered and achieved are both reported); what was shed (RESOURCE_EXHAUSTED),
how fast, what admitted requests paid, the server's RSS; then capacity again once the load stops.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import time
from pathlib import Path

import grpc

from benchmarks.load.calls import Call, percentile_ms, tally, timed
from benchmarks.load.meta import run_meta
from benchmarks.load.targets import NluGrpc
from benchmarks.serve import answered_latencies
from benchmarks.suite import BundleSuite, write_json
from export.data import read_dataset
from export.fetch import resolve_dataset
from service.client import request
from service.contract.paths import PROJECT_ROOT
from service.gen.nlu.v1 import nlu_pb2_grpc
from service.process import ServerProcess

SATURATION_CONCURRENCY = 16  # the serve suite's saturation point (throughput within 10 % of max)


async def fire(target: str, texts: list[str], rate: float, seconds: float) -> list[Call]:
    """Open loop: a request every 1/rate s whatever the answers."""
    cycle = itertools.cycle(texts)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = nlu_pb2_grpc.NluServiceStub(channel)
        start, tasks = time.perf_counter(), []
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.ensure_future(timed(stub.Parse(request(next(cycle)), timeout=10))))
        return list(await asyncio.gather(*tasks))


def fire_process(args: tuple[str, list[str], float, float]) -> list[Call]:
    return asyncio.run(fire(*args))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def capacity(target: str, texts: list[str], seconds: float) -> tuple[float, float]:
    latencies = answered_latencies(NluGrpc(target), texts, SATURATION_CONCURRENCY, seconds)
    return round(len(latencies) / seconds, 1), percentile_ms(latencies, 99)


def overload(server: ServerProcess, texts: list[str], rate: float, args) -> dict:
    """The open-loop phase, RSS sampled meanwhile."""
    pid, per_worker = server.process.pid, rate / args.workers
    rss = [rss_mb(pid)]
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        job = pool.map_async(
            fire_process, [(server.target, texts, per_worker, args.seconds)] * args.workers
        )
        while not job.ready():
            rss.append(rss_mb(pid))
            time.sleep(0.2)
        results = [call for worker in job.get() for call in worker]
    return {
        "offered_rps": round(len(results) / args.seconds, 1),
        "achieved_ok_rps": round(sum(c.outcome == "answered" for c in results) / args.seconds, 1),
        **tally(results),
        "rss_max_mb": round(max(rss), 1),
    }


def measure(bundle: Path, texts: list[str], queue_wait_ms: float, args) -> dict:
    """Capacity, then `args.multiple` × capacity offered, then capacity again."""
    server = ServerProcess.launch(
        bundle, PROJECT_ROOT / "logs" / f"overload-{queue_wait_ms:g}.log",
        "--max-queue-wait-ms", str(queue_wait_ms),
    )  # fmt: skip
    try:
        server.wait_serving()
        capacity_rps, p99_sat = capacity(server.target, texts, args.seconds)
        rss_before = rss_mb(server.process.pid)
        loaded = overload(server, texts, args.multiple * capacity_rps, args)
        recovered_rps, _ = capacity(server.target, texts, args.seconds)
        rss_after = rss_mb(server.process.pid)
    finally:
        server.stop()
    admitted_p99 = loaded["answered_p99_ms"]
    return {
        "max_queue_wait_ms": queue_wait_ms,
        "capacity_rps": capacity_rps,
        "saturation_p99_ms": p99_sat,
        **loaded,
        "admitted_p99_over_saturation": round(admitted_p99 / p99_sat, 2) if admitted_p99 else None,
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        "recovered_rps": recovered_rps,
        "recovered": recovered_rps >= 0.9 * capacity_rps,
    }


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The bundle and the load: shared with the reliability suite's overload scenario."""
    parser.add_argument("--data", default="atis")
    parser.add_argument("--bundle", type=Path, help="default: bundles/DATA")
    parser.add_argument("--seconds", type=float, default=10.0, help="load per phase")
    parser.add_argument("--workers", type=int, default=2, help="open-loop load processes")
    parser.add_argument("--multiple", type=float, default=3.0, help="overload / capacity")


class OverloadSuite(BundleSuite):
    name = "overload"
    help = "shedding, admitted latency, RSS and recovery at about 3x capacity"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_load_arguments(parser)
        parser.add_argument(
            "--queue-waits-ms", type=lambda v: [float(x) for x in v.split(",")],
            default=[0.0, 100.0], help="max_queue_wait_ms settings to compare (0: off)",
        )  # fmt: skip

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        if args.quick:
            args.seconds = 1.0
        texts = [ex.text for ex in read_dataset(resolve_dataset(args.data)).splits["test"]]
        (PROJECT_ROOT / "logs").mkdir(exist_ok=True)  # server logs (not committed)
        rows = [measure(self.bundle(args), texts, w, args) for w in args.queue_waits_ms]
        result = {
            "bundle": str(self.bundle(args)),
            "seconds_per_phase": args.seconds,
            "workers": args.workers,
            "multiple": args.multiple,
            "rows": rows,
            "meta": run_meta(),
        }
        write_json(out_dir / "overload.json", result)
        print(self.summary(result))
        return result

    def summary(self, result: dict) -> str:
        lines = [
            "| max_queue_wait_ms | capacity rps | sat. p99 ms | offered rps | OK rps | shed | "
            "failed/lost | shed p99 ms | admitted p99 ms | ×sat p99 | RSS before/max/after MB | "
            "recovered |",
            "|---" * 12 + "|",
        ]
        for r in result["rows"]:
            shed_pct = 100 * r["shed"] / r["sent"]
            recovered = "yes" if r["recovered"] else "NO"
            lines.append(
                f"| {r['max_queue_wait_ms']:g} | {r['capacity_rps']} | {r['saturation_p99_ms']} | "
                f"{r['offered_rps']} | {r['achieved_ok_rps']} | {shed_pct:.1f} % | "
                f"{r['failed']}/{r['lost']} | {r['shed_p99_ms']} | {r['answered_p99_ms']} | "
                f"{r['admitted_p99_over_saturation']} | {r['rss_before_mb']}/{r['rss_max_mb']}/"
                f"{r['rss_after_mb']} | {r['recovered_rps']} rps {recovered} |"
            )
        return "\n".join(lines)


SUITE = OverloadSuite()
