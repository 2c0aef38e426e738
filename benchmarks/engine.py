"""Inference speed of the same model as PyTorch eager, ONNX fp32 and ONNX int8.

    python -m benchmarks.engine --bundle bundles/atis --model artifacts/atis

Each cell (runtime × batch × threads) times tokenisation + forward pass on real ATIS test
utterances after warm-up; the runtimes of one (batch, threads) setting are measured one after the
other in the same process, so compare ratios rather than absolute times on a noisy machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from benchmarks.meta import PROJECT_ROOT, run_meta
from export.artifacts import load_artifacts
from export.data import read_dataset
from export.fetch import resolve_dataset
from service.runtime import Engine
from service.text import encode_texts

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "engine.json"
RUNTIMES = ("torch_eager", "onnx_fp32", "onnx_int8")
BATCHES = (1, 8, 32)
THREADS = (1, 2)


def torch_runner(model_dir: Path) -> Callable[[list[str]], None]:
    artifacts = load_artifacts(model_dir)

    @torch.inference_mode()
    def run(texts: list[str]) -> None:
        enc = encode_texts(artifacts.tokenizer, texts)
        artifacts.model(
            input_ids=torch.from_numpy(enc.input_ids),
            attention_mask=torch.from_numpy(enc.attention_mask),
            token_type_ids=torch.from_numpy(enc.token_type_ids),
        )

    return run


def onnx_runner(bundle: Path, variant: str, threads: int) -> Callable[[list[str]], None]:
    engine = Engine(bundle, variant=variant, intra_op_threads=threads, inter_op_threads=1)

    def run(texts: list[str]) -> None:
        engine.infer(engine.encode(texts))

    return run


def measure(
    run: Callable[[list[str]], None],
    batches: list[list[str]],
    warmup: int,
    min_iters: int,
    min_seconds: float,
) -> dict[str, float]:
    for batch in batches[:warmup]:
        run(batch)
    times: list[float] = []
    started = time.perf_counter()
    for batch in itertools.cycle(batches):
        t0 = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - t0)
        if len(times) >= min_iters and time.perf_counter() - started >= min_seconds:
            break
    ms = np.array(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "utterances_per_s": round(len(batches[0]) * len(times) / (ms.sum() / 1000), 1),
        "iterations": len(times),
    }


def run(bundle: Path, model_dir: Path, data: str, quick: bool, results: Path) -> dict:
    texts = [ex.text for ex in read_dataset(resolve_dataset(data)).splits["test"]]
    rows = []
    settings = [(t, b) for t in THREADS for b in BATCHES]
    bar = tqdm(total=len(settings) * len(RUNTIMES), desc="engine", unit="cell")
    for threads, batch in settings:
        torch.set_num_threads(threads)
        runners = {
            "torch_eager": torch_runner(model_dir),
            "onnx_fp32": onnx_runner(bundle, "fp32", threads),
            "onnx_int8": onnx_runner(bundle, "int8", threads),
        }
        batches = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)]
        for runtime in RUNTIMES:
            stats = measure(
                runners[runtime],
                batches,
                warmup=3 if quick else 10,
                min_iters=5 if quick else 50,
                min_seconds=0.2 if quick else 3.0,
            )
            rows.append({"runtime": runtime, "batch": batch, "threads": threads, **stats})
            bar.update()
    bar.close()
    report = {
        "rows": rows,
        "ratios": speedups(rows),
        "meta": {
            **run_meta(),
            "bundle": str(bundle),
            "model": str(model_dir),
            "dataset": data,
            "utterances": len(texts),
            "onnxruntime_providers": ort.get_available_providers(),
            "quick": quick,
        },
    }
    previous = json.loads(results.read_text()) if results.is_file() else {}
    if "gpu" in previous:
        report["gpu"] = previous["gpu"]
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2) + "\n")
    return report


def speedups(rows: list[dict]) -> list[dict]:
    """p50 speed-up of each ONNX variant over PyTorch eager at the same batch and threads."""
    index = {(r["runtime"], r["batch"], r["threads"]): r for r in rows}
    out = []
    for (runtime, batch, threads), row in index.items():
        if runtime == "torch_eager":
            continue
        base = index[("torch_eager", batch, threads)]
        out.append(
            {
                "runtime": runtime,
                "batch": batch,
                "threads": threads,
                "p50_speedup_vs_torch": round(base["p50_ms"] / row["p50_ms"], 2),
            }
        )
    return out


def table(report: dict) -> str:
    lines = ["| runtime | batch | threads | p50 ms | p95 ms | p99 ms | utt/s |", "|---" * 7 + "|"]
    for r in report["rows"]:
        lines.append(
            f"| {r['runtime']} | {r['batch']} | {r['threads']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['p99_ms']} | {r['utterances_per_s']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=PROJECT_ROOT / "bundles" / "atis")
    p.add_argument("--model", type=Path, default=PROJECT_ROOT / "artifacts" / "atis")
    p.add_argument("--data", default="atis")
    p.add_argument("--quick", action="store_true", help="a few iterations per cell (smoke test)")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    report = run(args.bundle, args.model, args.data, args.quick, args.results)
    print(table(report))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
