"""Suite `serve`: the server under closed-loop load over gRPC and HTTP/JSON, against the same
engine in-process (measured before and after the sweeps: their mean, and the drift between).

    python -m benchmarks serve [--bundle bundles/atis]

Starts the real server as a subprocess on 127.0.0.1 with both front ends, then for each protocol
and concurrency level runs that many callers (`benchmarks.load`: grpc.aio `Parse`; httpx `POST
/v1/parse` with one keep-alive connection per caller), each sending the next ATIS test utterance
as soon as its previous answer arrives, in windows repeated until throughput and p50 are stable
(10 % over the last three) or a cap. The per-stage split (queue, tokenize, inference, decode)
comes from the server's own Prometheus histograms. The load generator shares the machine's cores
with the server. Rows "traced": a second server with tracing on (`service.tracing`), exporting
every span over OTLP/gRPC to a receiver in this process (`benchmarks.otlp_sink`), at
concurrency 1: what tracing costs against the untraced rows. Rows "grpc, N workers": the server
as N processes sharing the port (`--workers`, `service.workers`), each with 1/N of the cores.
The targets also come from paired windows (`paired_targets`): on each gRPC server, a window at
the top concurrency and one at concurrency 1 next to a pass of the engine in this process (model
only; batch-1 p50), in alternating order, so that a drift of the machine hits both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from pathlib import Path

import httpx
from matplotlib.figure import Figure
from tqdm import tqdm

from benchmarks.load.loops import closed_loop
from benchmarks.load.measure import STABLE_WINDOWS, is_stable, latency_stats
from benchmarks.load.meta import run_meta
from benchmarks.load.targets import NluGrpc, NluHttp
from benchmarks.otlp_sink import SpanSink
from benchmarks.suite import Suite, save_figure, write_csv, write_json
from export.data import read_dataset
from export.fetch import resolve_dataset
from service.contract.paths import PROJECT_ROOT
from service.process import ServerProcess
from service.runtime import Engine
from service.settings import EngineSettings

CONCURRENCY = (1, 4, 16, 64)
PROTOCOLS = ("grpc", "http")
STAGES = ("queue", "tokenize", "inference", "decode")


def stage_totals(metrics_port: int) -> dict[str, tuple[float, float]]:
    """(sum seconds, count) per stage, plus batch-size sum/count, from /metrics."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    totals: dict[str, list[float]] = {}
    for line in text.splitlines():
        for stage in STAGES:
            for suffix, slot in (("_sum", 0), ("_count", 1)):
                if line.startswith(f'nlu_stage_duration_seconds{suffix}{{stage="{stage}"}}'):
                    totals.setdefault(stage, [0.0, 0.0])[slot] = float(line.rsplit(" ", 1)[1])
        for suffix, slot in (("_sum", 0), ("_count", 1)):
            if line.startswith(f"nlu_batch_size{suffix} "):
                totals.setdefault("batch_size", [0.0, 0.0])[slot] = float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in totals.items()}


def answered_latencies(target, texts: list[str], concurrency: int, seconds: float) -> list[float]:
    """Latencies (s) of the answered calls of a closed loop (`benchmarks.load`)."""
    window = asyncio.run(closed_loop(target, texts, concurrency, seconds))
    failed = [c for c in window.calls if c.code != "OK"]
    if failed:
        raise RuntimeError(
            f"{len(failed)} calls failed, e.g. {failed[0].code}: {failed[0].details}"
        )
    return [c.seconds for c in window.calls]


def measure_level(
    server: ServerProcess,
    protocol: str,
    texts: list[str],
    concurrency: int,
    window_s: float,
    max_windows: int,
) -> dict:
    target = NluHttp(server.http_url) if protocol == "http" else NluGrpc(server.target)
    answered_latencies(target, texts, concurrency, window_s / 2)  # warm-up
    before = stage_totals(server.metrics_port)
    windows, samples = [], []
    while len(windows) < max_windows and not is_stable(windows, 0.10):
        latencies = answered_latencies(target, texts, concurrency, window_s)
        samples.append(latencies)
        stats = latency_stats(latencies, 1)
        stats["utterances_per_s"] = len(latencies) / window_s
        windows.append(stats)
    after = stage_totals(server.metrics_port)
    stable = is_stable(windows, 0.10)
    used = samples[-STABLE_WINDOWS:] if stable else samples
    latencies = list(itertools.chain(*used))
    stats = latency_stats(latencies, 1)
    split = {}
    for stage in (*STAGES, "batch_size"):
        total = after.get(stage, (0.0, 0.0))
        start = before.get(stage, (0.0, 0.0))
        count = total[1] - start[1]
        mean = (total[0] - start[0]) / count if count else 0.0
        split[f"{stage}_mean" if stage == "batch_size" else f"{stage}_ms"] = round(
            mean if stage == "batch_size" else mean * 1000, 3
        )
    return {
        "protocol": protocol,
        "concurrency": concurrency,
        "throughput_rps": round(len(latencies) / (window_s * len(used)), 1),
        **{k: stats[k] for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")},
        "server_stages": split,
        "windows": len(windows),
        "stable": stable,
        "requests": len(latencies),
    }


IN_PROCESS_BATCH = 32
IN_PROCESS_PASSES = 3
PAIRS = 4


class InProcess:
    """The engine in this process with the variant the server serves (the bundle's: a bundle
    whose int8 graph failed the export gate on this CPU holds fp32 only), the test split
    tokenised beforehand in batches of 32 in arrival order."""

    def __init__(self, bundle: Path, texts: list[str], threads: int) -> None:
        self.engine = Engine(
            bundle, settings=EngineSettings(intra_op_threads=threads, inter_op_threads=1)
        )
        self.texts = texts
        for text in texts[:20]:
            self.engine.parse([text])
        self.batches = [
            texts[i : i + IN_PROCESS_BATCH] for i in range(0, len(texts), IN_PROCESS_BATCH)
        ]
        self.encoded = [self.engine.encode(batch) for batch in self.batches]

    def p50_ms(self) -> float:
        """Batch-1 parse (tokenise, model, decode) of the first 300 utterances: the median."""
        times = []
        for text in self.texts[:300]:
            t0 = time.perf_counter()
            self.engine.parse([text])
            times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times)

    def model_utt_per_s(self) -> float:
        """One pass of the model alone over the tokenised test split."""
        t0 = time.perf_counter()
        for enc in self.encoded:
            self.engine.infer(enc)
        return len(self.texts) / (time.perf_counter() - t0)


def spread(ratios: list[float]) -> dict:
    return {
        "median": round(statistics.median(ratios), 2),
        "min": round(min(ratios), 2),
        "max": round(max(ratios), 2),
    }


def paired_targets(
    server: ServerProcess,
    local: InProcess,
    texts: list[str],
    top: int,
    window_s: float,
    pairs: int,
) -> dict:
    """Both targets as ratios of adjacent windows: the server's throughput at `top` callers
    over the model alone in this process, and its p50 at one caller over the engine's batch-1
    p50; the order alternates pair by pair."""
    target = NluGrpc(server.target)
    answered_latencies(target, texts, top, window_s / 2)  # warm-up

    def served() -> tuple[float, float]:
        throughput = len(answered_latencies(target, texts, top, window_s)) / window_s
        return throughput, 1000 * statistics.median(answered_latencies(target, texts, 1, window_s))

    def alone() -> tuple[float, float]:
        return local.model_utt_per_s(), local.p50_ms()

    throughput_ratios, p50_ratios = [], []
    for i in range(pairs):
        if i % 2:
            (model, p50_alone), (throughput, p50) = alone(), served()
        else:
            (throughput, p50), (model, p50_alone) = served(), alone()
        throughput_ratios.append(throughput / model)
        p50_ratios.append(p50 / p50_alone)
    return {
        "top_concurrency_over_in_process_model": spread(throughput_ratios),
        "p50_c1_over_in_process": spread(p50_ratios),
        "pairs": pairs,
    }


def in_process(local: InProcess) -> dict:
    """Batch-1 p50, and utterances/s on batches of 32 in arrival order for the model alone
    (inputs tokenised beforehand) and the pipeline (tokenise + model + decode), the best of a
    few passes over the test split (the practical limit the server is held against)."""
    engine, texts = local.engine, local.texts
    raw = [engine.infer(enc) for enc in local.encoded]
    model, pipeline, tokenise, decode = [], [], [], []
    for _ in range(IN_PROCESS_PASSES):
        model.append(local.model_utt_per_s())
        t0 = time.perf_counter()
        for batch in local.batches:
            engine.parse(batch)
        pipeline.append(len(texts) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for batch in local.batches:
            engine.encode(batch)
        tokenise.append((time.perf_counter() - t0) / len(texts))
        t0 = time.perf_counter()
        for batch, enc, outputs in zip(local.batches, local.encoded, raw, strict=True):
            engine.decode(batch, enc, outputs)
        decode.append((time.perf_counter() - t0) / len(texts))
    return {
        "p50_ms": round(local.p50_ms(), 3),
        "variant": engine.variant,
        "utt_per_s": round(max(model), 1),
        "pipeline_utt_per_s": round(max(pipeline), 1),
        "tokenise_ms_per_utt": round(1000 * min(tokenise), 3),
        "decode_ms_per_utt": round(1000 * min(decode), 3),
    }


def bracketed(before: dict, after: dict) -> dict:
    """The in-process figures measured before and after the sweeps, averaged, with how far the
    machine drifted between the two (after ÷ before): the server's rows lie in between."""
    figures = {k: v for k, v in before.items() if isinstance(v, float)}
    return {
        **before,
        **{k: round((v + after[k]) / 2, 3) for k, v in figures.items()},
        "after_over_before": {k: round(after[k] / v, 2) for k, v in figures.items()},
    }


class ServeSuite(Suite):
    name = "serve"
    help = "gRPC and HTTP closed-loop concurrency sweep against the in-process engine"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", default="atis")
        parser.add_argument("--bundle", type=Path, help="default: bundles/DATA")
        parser.add_argument(
            "--server-threads",
            type=int,
            default=0,
            help="ORT intra-op threads in the server (0: all cores)",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=2,
            help="also measure gRPC against the server as this many processes (below 2: not)",
        )

    @staticmethod
    def sweep(
        args: argparse.Namespace,
        bundle: Path,
        out_dir: Path,
        plan: list[tuple[str, int]],
        texts: list[str],
        window_s: float,
        max_windows: int,
        env: dict[str, str] | None,
        workers: int = 1,
        local: InProcess | None = None,
    ) -> tuple[list[dict], dict | None]:
        """One server (both front ends; `env` may turn tracing on; `workers` processes),
        measured at each (protocol, concurrency) of `plan`; then, given the engine in this
        process, the paired targets over gRPC."""
        threads = args.server_threads // workers if args.server_threads else 0
        server = ServerProcess.launch(
            bundle,
            out_dir / "serve-server.log",
            "--workers",
            str(workers),
            "--intra-op-threads",
            str(threads),
            "--max-queue-size",
            "4096",
            "--max-concurrent-rpcs",
            "0",  # latency at each concurrency, up to 64: nothing refused
            "--max-queue-wait-ms",
            "0",
            http=True,
            env=env,
        )
        try:
            server.wait_serving()
            rows = [
                measure_level(server, protocol, texts, c, window_s, max_windows)
                for protocol, c in tqdm(plan, desc="serve", unit="level", disable=None)
            ]
            if local is None:
                return rows, None
            top = max(c for _, c in plan)
            pairs = 2 if args.quick else PAIRS
            return rows, paired_targets(server, local, texts, top, window_s, pairs)
        finally:
            server.stop()
            (out_dir / "serve-server.log").unlink(missing_ok=True)

    def bundle(self, args: argparse.Namespace, out_dir: Path) -> Path:
        root = out_dir if args.quick else PROJECT_ROOT
        return args.bundle or root / "bundles" / args.data

    def skip_reason(self, args: argparse.Namespace, out_dir: Path) -> str | None:
        bundle = self.bundle(args, out_dir)
        if not (bundle / "config.json").is_file():
            return f"needs a bundle at {bundle} (make export, or the accuracy suite)"
        return None

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        bundle = self.bundle(args, out_dir)
        texts = [ex.text for ex in read_dataset(resolve_dataset(args.data)).splits["test"]]
        levels = CONCURRENCY[:2] if args.quick else CONCURRENCY
        window_s, max_windows = (0.3, 3) if args.quick else (3.0, 8)
        out_dir.mkdir(parents=True, exist_ok=True)
        plan = [(p, c) for p in PROTOCOLS for c in levels]
        local = InProcess(bundle, texts, args.server_threads)
        before = in_process(local)
        rows, paired = self.sweep(
            args, bundle, out_dir, plan, texts, window_s, max_windows, None, local=local
        )
        paired_by_server = {"grpc": paired}
        sink = SpanSink().start()  # tracing on: the cost of exporting every span over OTLP
        try:
            traced, _ = self.sweep(
                args, bundle, out_dir, [("grpc", 1), ("http", 1)], texts, window_s,
                max_windows, sink.environment(),
            )  # fmt: skip
        finally:
            sink.stop()
        for row in traced:
            row["protocol"] += ", traced"
        rows += traced
        if args.workers > 1:
            plan = [("grpc", c) for c in levels]
            processes, paired = self.sweep(
                args, bundle, out_dir, plan, texts, window_s, max_windows, None, args.workers,
                local,
            )  # fmt: skip
            for row in processes:
                row["protocol"] += f", {args.workers} workers"
            rows += processes
            paired_by_server[f"grpc, {args.workers} workers"] = paired
        engine = bracketed(before, in_process(local))
        top = max(r["concurrency"] for r in rows)
        at_top = {r["protocol"]: r for r in rows if r["concurrency"] == top}
        report = {
            "rows": rows,
            "in_process_p50_ms": engine["p50_ms"],
            "in_process_utt_per_s": engine["utt_per_s"],
            "in_process_pipeline_utt_per_s": engine["pipeline_utt_per_s"],
            "in_process_tokenise_ms_per_utt": engine["tokenise_ms_per_utt"],
            "in_process_decode_ms_per_utt": engine["decode_ms_per_utt"],
            "in_process_after_over_before": engine["after_over_before"],
            "top_concurrency_over_in_process_model": {
                protocol: round(r["throughput_rps"] / engine["utt_per_s"], 2)
                for protocol, r in at_top.items()
                if protocol.startswith("grpc")
            },
            "p50_c1_over_in_process": {
                r["protocol"]: round(r["p50_ms"] / engine["p50_ms"], 2)
                for r in rows
                if r["concurrency"] == 1
            },
            "paired_targets": paired_by_server,
            "meta": {
                **run_meta(),
                "bundle": str(bundle),
                "variant": engine["variant"],
                "dataset": args.data,
                "utterances": len(texts),
                "server_intra_op_threads": args.server_threads,
                "workers_compared": args.workers,
                "client": "grpc.aio / httpx.AsyncClient closed loop in this process, sharing "
                "the cores",
                "window_s": window_s,
                "quick": args.quick,
            },
        }
        write_json(out_dir / "serve.json", report)
        write_csv(
            out_dir / "serve.csv",
            [
                {k: v for k, v in r.items() if k != "server_stages"} | r["server_stages"]
                for r in rows
            ],
        )
        save_figure(plot(rows), out_dir / "serve.png")
        return report

    def summary(self, result: dict) -> str:
        lines = [
            "| protocol | concurrency | req/s | p50 ms | p90 ms | p95 ms | p99 ms | mean batch | "
            "queue ms | tokenize ms | inference ms | decode ms |",
            "|---" * 12 + "|",
        ]
        for r in result["rows"]:
            s = r["server_stages"]
            lines.append(
                f"| {r.get('protocol', 'grpc')} | {r['concurrency']} | "
                f"{r['throughput_rps']:.0f} | {r['p50_ms']:.2f} | "
                f"{r['p90_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{s['batch_size_mean']:.1f} | {s['queue_ms']:.2f} | {s['tokenize_ms']:.2f} | "
                f"{s['inference_ms']:.2f} | {s['decode_ms']:.2f} |"
            )
        meta = result["meta"]
        over = ", ".join(f"{p} {r}×" for p, r in result["p50_c1_over_in_process"].items())
        top = result["top_concurrency_over_in_process_model"]
        top_over = ", ".join(f"{p} {r}×" for p, r in top.items())
        lines += [
            "",
            f"In-process engine p50 (batch 1): {result['in_process_p50_ms']:.2f} ms; "
            f"p50 at concurrency 1 over it: {over}. In-process, batches of {IN_PROCESS_BATCH}: "
            f"model only {result['in_process_utt_per_s']} utt/s, tokenise + model + decode "
            f"{result['in_process_pipeline_utt_per_s']} utt/s (tokenise "
            f"{result['in_process_tokenise_ms_per_utt']} ms, decode "
            f"{result['in_process_decode_ms_per_utt']} ms per utterance); at the top "
            f"concurrency over the model-only figure: {top_over}. In-process figures: the mean "
            "of runs before and after the sweeps (after ÷ before: model only "
            f"{result['in_process_after_over_before']['utt_per_s']}×, p50 "
            f"{result['in_process_after_over_before']['p50_ms']}×). Client and server share "
            f"{meta['cores']} cores ({meta['cpu']}); commit {meta['git_commit'][:12]}. Stage "
            "times are per batch (queue: per request).",
        ]
        for server, paired in result.get("paired_targets", {}).items():
            top, p50 = paired["top_concurrency_over_in_process_model"], paired[
                "p50_c1_over_in_process"]  # fmt: skip
            lines.append(
                f"\nPaired windows, {server} ({paired['pairs']} pairs, median [min, max]): "
                f"throughput at the top concurrency over the in-process model "
                f"{top['median']}× [{top['min']}, {top['max']}] (≥ 0.85 asked); p50 at "
                f"concurrency 1 over the in-process p50 {p50['median']}× [{p50['min']}, "
                f"{p50['max']}] (≤ 1.3 asked)."
            )
        return "\n".join(lines)


def plot(rows: list[dict]) -> Figure:
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    for protocol in PROTOCOLS:  # the traced rows are in the table, not the plot
        mine = [r for r in rows if r.get("protocol", "grpc") == protocol]
        conc = [r["concurrency"] for r in mine]
        for key in ("p50_ms", "p99_ms"):
            label = f"{protocol} {key.replace('_ms', '')}"
            ax.plot(conc, [r[key] for r in mine], marker="o", label=label)
        ax2.plot(conc, [r["throughput_rps"] for r in mine], marker="o", label=protocol)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("latency (ms)")
    ax.legend()
    ax.grid(alpha=0.3)
    ax2.legend()
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("concurrent callers")
    ax2.set_ylabel("requests/s")
    ax2.grid(alpha=0.3)
    return fig


SUITE = ServeSuite()
