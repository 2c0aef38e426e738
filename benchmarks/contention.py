"""Suite `contention`: does an in-process generator starve the encoder?

    python -m benchmarks contention [--bundle bundles/atis] [--seconds 20]

Starts the real server with the local generator (SmolLM2, 1 torch thread; generate mode, then
the cheaper score mode that `make run` uses) and measures
encoder-only requests (closed loop, concurrency 1 and 4) twice: alone, and while one more caller
keeps a generator-only request in flight the whole time. Repeated for ORT intra-op threads 1 (the
encoder keeps one core, the generator the other) and 0 (ORT takes every core).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from pathlib import Path

import grpc
from matplotlib.figure import Figure

from benchmarks.load.measure import latency_stats
from benchmarks.load.meta import run_meta
from benchmarks.suite import BundleSuite, save_figure, write_csv, write_json
from export.data import read_dataset
from export.fetch import resolve_dataset
from service.client import NluClient, request
from service.gen.nlu.v1 import nlu_pb2_grpc
from service.process import ServerProcess

CONCURRENCY = (1, 4)
ORT_THREADS = (1, 0)
GENERATOR_TIMEOUT_S = "60"


async def load(
    target: str, texts: list[str], concurrency: int, seconds: float, fallbacks: bool
) -> tuple[list[float], list[float], int]:
    """(encoder latencies, generator-call latencies in seconds, generator calls the server
    answered without the generator because it was still loading) over one window; a generator
    call counts whether or not its answer passed validation (it used the CPU either way)."""
    cycle = itertools.cycle(texts)
    encoder, generator = [], []
    loading = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = nlu_pb2_grpc.NluServiceStub(channel)
        stop_at = time.perf_counter() + seconds

        async def caller(policy: str, out: list[float]) -> None:
            nonlocal loading
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                answer = await stub.Parse(request(next(cycle), policy=policy), timeout=120)
                out.append(time.perf_counter() - t0)
                loading += answer.fallback_reason == "generator_loading"

        callers = [caller("encoder", encoder) for _ in range(concurrency)]
        if fallbacks:
            callers.append(caller("generator", generator))
        await asyncio.gather(*callers)
    return encoder, generator, loading


def wait_generator_ready(target: str, timeout_s: float) -> None:
    """Until GetModelInfo says the generator is loaded: the server reports SERVING as soon as the
    encoder is ready and loads the generator behind it, and a generator-only call made before
    that is answered by the encoder at once, which would measure nothing."""
    deadline = time.monotonic() + timeout_s
    with NluClient(target, timeout_s=5) as client:
        while not client.info().routing.generator_ready:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the generator at {target} not ready after {timeout_s} s")
            time.sleep(0.5)


class ContentionSuite(BundleSuite):
    name = "contention"
    help = "encoder p50/p99 with and without generator requests in flight (local backend)"
    in_default_run = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", default="atis")
        parser.add_argument("--bundle", type=Path, help="default: bundles/DATA")
        parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
        parser.add_argument(
            "--modes", nargs="+", default=["generate", "score"], choices=["generate", "score"]
        )
        parser.add_argument("--lm", default="", help="generator model (default: packaged SmolLM2)")

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        texts = [ex.text for ex in read_dataset(resolve_dataset(args.data)).splits["test"]]
        seconds = 2.0 if args.quick else args.seconds
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        configs = [(m, t) for m in args.modes for t in ORT_THREADS]
        for mode, threads in configs[:1] if args.quick else configs:
            log_path = out_dir / "contention-server.log"
            server = ServerProcess.launch(
                self.bundle(args),
                log_path,
                "--intra-op-threads",
                str(threads),
                "--generator-backend",
                "local",
                "--generator-mode",
                mode,
                "--generator-timeout-s",
                GENERATOR_TIMEOUT_S,
                *(["--generator-model", args.lm] if args.lm else []),
            )
            try:
                server.wait_serving(timeout_s=300)
                wait_generator_ready(server.target, timeout_s=300)
                asyncio.run(load(server.target, texts, 1, 2.0, True))  # warm-up both paths
                for concurrency in CONCURRENCY:
                    for fallbacks in (False, True):
                        enc, gen, loading = asyncio.run(
                            load(server.target, texts, concurrency, seconds, fallbacks)
                        )
                        stats = latency_stats(enc, 1)
                        rows.append(
                            {
                                "generator_mode": mode,
                                "ort_threads": threads,
                                "concurrency": concurrency,
                                "generator_in_flight": fallbacks,
                                "encoder_requests": len(enc),
                                "encoder_p50_ms": stats["p50_ms"],
                                "encoder_p99_ms": stats["p99_ms"],
                                "encoder_rps": round(len(enc) / seconds, 1),
                                "generator_calls": len(gen),
                                "generator_loading": loading,
                                "generator_p50_ms": latency_stats(gen, 1)["p50_ms"]
                                if gen
                                else None,
                            }
                        )
            finally:
                server.stop()
            log_path.unlink(missing_ok=True)
        report = {"rows": rows, "meta": {**run_meta(), "seconds": seconds, "dataset": args.data}}
        write_json(out_dir / "contention.json", report)
        write_csv(out_dir / "contention.csv", rows)
        save_figure(plot(rows), out_dir / "contention.png")
        return report

    def summary(self, result: dict) -> str:
        lines = [
            "| generator mode | ORT threads | encoder callers | generator in flight | "
            "encoder p50 ms | encoder p99 ms | encoder req/s | generator calls | "
            "generator p50 ms |",
            "|---" * 9 + "|",
        ]
        for r in result["rows"]:
            gen_p50 = f"{r['generator_p50_ms']:.0f}" if r["generator_p50_ms"] else ""
            lines.append(
                f"| {r['generator_mode']} | {r['ort_threads'] or 'all'} | {r['concurrency']} | "
                f"{'yes' if r['generator_in_flight'] else 'no'} | {r['encoder_p50_ms']:.2f} | "
                f"{r['encoder_p99_ms']:.2f} | {r['encoder_rps']:.0f} | {r['generator_calls']} "
                f"| {gen_p50} |"
            )
        meta = result["meta"]
        lines += [
            "",
            f"{meta['seconds']:.0f} s per row; client, server and generator share "
            f"{meta['cores']} cores ({meta['cpu']}); commit {meta['git_commit'][:12]}.",
        ]
        return "\n".join(lines)


def plot(rows: list[dict]) -> Figure:
    fig = Figure(figsize=(12, 4))
    ax = fig.add_subplot(1, 1, 1)
    labels, p50, p99 = [], [], []
    for r in rows:
        labels.append(
            f"{r['generator_mode']}, ORT {r['ort_threads'] or 'all'}\nc{r['concurrency']} "
            f"{'+gen' if r['generator_in_flight'] else 'alone'}"
        )
        p50.append(r["encoder_p50_ms"])
        p99.append(r["encoder_p99_ms"])
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], p50, 0.4, label="encoder p50")
    ax.bar([i + 0.2 for i in x], p99, 0.4, label="encoder p99")
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("ms")
    ax.set_title("Encoder latency with and without a generation in flight")
    ax.legend()
    return fig


SUITE = ContentionSuite()
