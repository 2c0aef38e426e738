"""Suite `engine`: the same model as PyTorch eager, ONNX fp32 and ONNX int8.

    python -m benchmarks engine [--bundle bundles/atis --model artifacts/atis]

For each (batch, threads) setting the three runtimes run interleaved, request by request, on real
ATIS test utterances (tokenisation + forward pass), in windows repeated until stable
(benchmarks.load.measure). Ratios against PyTorch eager come from the same windows.
Interleaving puts three thread pools in one process: idle ones must not spin-wait on the cores
the measured one needs, so ORT spinning is off here and the CLI runs torch's OpenMP with
OMP_WAIT_POLICY=PASSIVE.
A lone ORT session with spinning on is somewhat faster at batch 1 (the server keeps it on), so
the solo-session A/B (int8 alone, two engines) keeps the server's setting.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from benchmarks.limit import limit_report, machine_limits, token_counts
from benchmarks.load.measure import WindowPolicy, measure_interleaved
from benchmarks.load.meta import run_meta
from benchmarks.suite import Suite, save_figure, write_csv, write_json
from export.artifacts import load_artifacts
from export.data import read_dataset
from export.fetch import resolve_dataset
from service.contract.bundle import CPU_VARIANTS
from service.contract.paths import PROJECT_ROOT
from service.contract.text import encode_texts
from service.runtime import Engine
from service.settings import EngineSettings

BATCHES = (1, 8, 32)
THREADS = (1, 2)


def torch_runner(model_dir: Path) -> Callable[[list[str]], object]:
    artifacts = load_artifacts(model_dir)

    @torch.inference_mode()
    def run(texts: list[str]) -> object:
        enc = encode_texts(artifacts.tokenizer, texts)
        return artifacts.model(
            input_ids=torch.from_numpy(enc.input_ids),
            attention_mask=torch.from_numpy(enc.attention_mask),
            token_type_ids=torch.from_numpy(enc.token_type_ids),
        )

    return run


def engine_runner(engine: Engine) -> Callable[[list[str]], object]:
    """Tokenisation + forward pass, what every ONNX row measures."""
    return lambda texts: engine.infer(engine.encode(texts))


def onnx_runner(bundle: Path, variant: str, threads: int) -> Callable[[list[str]], object]:
    settings = EngineSettings(
        variant=variant, intra_op_threads=threads, inter_op_threads=1, ort_allow_spinning=False
    )
    return engine_runner(Engine(bundle, settings=settings))


def solo_session_ab(bundle: Path, texts: list[str], policy: WindowPolicy) -> dict:
    """What `NLU_SOLO_SESSION` buys at low load: int8 at batch 1 on 2 intra-op threads with the
    solo session (both threads on the utterance) and without it (one instance's single thread),
    interleaved request by request, ORT spinning as the server sets it."""
    engines = {
        name: Engine(
            bundle,
            settings=EngineSettings(
                variant="int8", intra_op_threads=2, inter_op_threads=1, solo_session=solo
            ),
        )
        for name, solo in (("solo", True), ("one_thread", False))
    }
    runners = {name: engine_runner(engine) for name, engine in engines.items()}
    stats = measure_interleaved(runners, [[text] for text in texts], policy)
    solo, alone = stats["solo"]["p50_ms"], stats["one_thread"]["p50_ms"]
    return {
        "solo_p50_ms": solo,
        "one_thread_p50_ms": alone,
        "solo_over_one_thread": round(solo / alone, 2),
        "spinning": engines["solo"].spinning,
    }


class EngineSuite(Suite):
    name = "engine"
    help = "latency/throughput: torch eager vs ONNX fp32 vs ONNX int8, batch 1/8/32, 1/2 threads"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", default="atis")
        parser.add_argument("--bundle", type=Path, help="default: bundles/DATA")
        parser.add_argument("--model", type=Path, help="default: artifacts/DATA")

    def paths(self, args: argparse.Namespace, out_dir: Path) -> tuple[Path, Path]:
        root = out_dir if args.quick else PROJECT_ROOT
        return (
            args.bundle or root / "bundles" / args.data,
            args.model or root / "artifacts" / args.data,
        )

    def skip_reason(self, args: argparse.Namespace, out_dir: Path) -> str | None:
        bundle, model = self.paths(args, out_dir)
        if not (bundle / "config.json").is_file() or not (model / "config.json").is_file():
            return f"needs {bundle} and {model} (make export, or the accuracy suite)"
        return None

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        bundle, model = self.paths(args, out_dir)
        policy = WindowPolicy.quick() if args.quick else WindowPolicy()
        texts = [ex.text for ex in read_dataset(resolve_dataset(args.data)).splits["test"]]
        variants = json.loads((bundle / "config.json").read_text())["variants"]
        runtimes = ["torch_eager", *(f"onnx_{v}" for v in CPU_VARIANTS if v in variants)]
        rows, ratios = [], []
        settings = [(t, b) for t in THREADS for b in BATCHES]
        for threads, batch in tqdm(settings, desc="engine", unit="setting", disable=None):
            torch.set_num_threads(threads)
            runners = {"torch_eager": torch_runner(model)} | {
                r: onnx_runner(bundle, r.removeprefix("onnx_"), threads) for r in runtimes[1:]
            }
            batches = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)]
            stats = measure_interleaved(runners, batches, policy)
            rows += [
                {"runtime": r, "batch": batch, "threads": threads, **stats[r]} for r in runtimes
            ]
            base = stats["torch_eager"]["p50_ms"]
            ratios += [
                {
                    "runtime": r,
                    "batch": batch,
                    "threads": threads,
                    "p50_speedup_vs_torch": round(base / stats[r]["p50_ms"], 2),
                }
                for r in runtimes[1:]
            ]
        path = out_dir / "engine.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        report = {
            "rows": rows,
            "ratios": ratios,
            "meta": {
                **run_meta(),
                "bundle": str(bundle),
                "model": str(model),
                "dataset": args.data,
                "utterances": len(texts),
                "graphs": {v: record["graph"] for v, record in variants.items()},
                "onnxruntime_providers": ort.get_available_providers(),
                "measurement": policy.__dict__,
                "quick": args.quick,
            },
        }
        encoder = json.loads((model / "encoder" / "config.json").read_text())
        engines = {
            v: Engine(bundle, settings=EngineSettings(variant=v, inter_op_threads=1))
            for v in CPU_VARIANTS
            if v in variants
        }
        sample = texts[:100] if args.quick else texts
        tokens = token_counts(next(iter(engines.values())), sample)
        machine = machine_limits(report["meta"]["cores"])
        report["limit"] = {
            v: limit_report(engine, encoder, sample, tokens, machine)
            for v, engine in engines.items()
        }
        if "int8" in variants:
            report["solo_session"] = solo_session_ab(bundle, texts, policy)
        if "gpu" in previous:
            report["gpu"] = previous["gpu"]
        write_json(path, report)
        write_csv(out_dir / "engine.csv", rows)
        for key, fname, label in (
            ("p50_ms", "engine_latency.png", "p50 latency per batch (ms)"),
            ("utterances_per_s", "engine_throughput.png", "throughput (utterances/s)"),
        ):
            save_figure(plot(rows, key, label), out_dir / fname)
        return report

    def summary(self, result: dict) -> str:
        lines = [
            "| runtime | batch | threads | p50 ms | p90 ms | p99 ms | utt/s | × torch (p50) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        speed = {
            (r["runtime"], r["batch"], r["threads"]): r["p50_speedup_vs_torch"]
            for r in result["ratios"]
        }
        for r in result["rows"]:
            ratio = speed.get((r["runtime"], r["batch"], r["threads"]), 1.0)
            lines.append(
                f"| {r['runtime']} | {r['batch']} | {r['threads']} | {r['p50_ms']:.2f} | "
                f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['utterances_per_s']:.0f} | "
                f"{ratio:.2f} |"
            )
        meta = result["meta"]
        lines += [
            "",
            f"Tokenisation + forward pass on {meta['utterances']} ATIS test utterances; "
            f"commit {meta['git_commit'][:12]}, {meta['cpu']}, {meta['cores']} cores.",
        ]
        solo = result.get("solo_session")
        if solo:
            lines.append(
                f"\nSolo session (int8, batch 1, 2 threads, ORT spinning "
                f"{'on' if solo['spinning'] else 'off'}, interleaved request by request): p50 "
                f"{solo['solo_p50_ms']} ms on the solo session against {solo['one_thread_p50_ms']} "
                f"ms on one instance's thread ({solo['solo_over_one_thread']}×)."
            )
        for variant, limit in result.get("limit", {}).items():
            peak = limit["nominal_peak"]
            kernels = ", ".join(f"{op} {pct} %" for op, pct in limit["ort_kernel_time_pct"].items())
            lines.append(
                f"\nLimit, {variant}: {limit['gmacs_per_utterance']} GMAC per utterance at "
                f"{limit['mean_tokens']} tokens on average; nominal {peak['isa']} peak "
                f"{peak[variant + '_gmacs']} GMAC/s at {peak['mhz']} MHz → "
                f"{limit['nominal_limit_utt_per_s']} utt/s (numpy fp32 GEMM reaches "
                f"{limit['numpy_fp32_gemm_gmacs']} GMAC/s). ONNX Runtime's time by operator "
                f"(batch 1): {kernels}."
            )
        return "\n".join(lines)


def plot(rows: list[dict], key: str, label: str) -> Figure:
    fig = Figure(figsize=(10, 4))
    for i, threads in enumerate(THREADS):
        ax = fig.add_subplot(1, len(THREADS), i + 1)
        for runtime in dict.fromkeys(r["runtime"] for r in rows):
            points = [
                (r["batch"], r[key])
                for r in rows
                if r["runtime"] == runtime and r["threads"] == threads
            ]
            ax.plot(*zip(*points, strict=True), marker="o", label=runtime)
        ax.set_xscale("log", base=2)
        ax.set_xticks(BATCHES, [str(b) for b in BATCHES])
        if key == "p50_ms":
            ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.set_title(f"{threads} thread{'s' if threads > 1 else ''}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


SUITE = EngineSuite()
