"""Suite `accuracy`: train with the default settings, export the bundle, score the test split.

    python -m benchmarks accuracy [--datasets atis snips]

Per dataset × variant (torch, onnx_fp32, onnx_int8): intent accuracy, slot F1, sentence accuracy.
Models go to artifacts/DATASET and bundles to bundles/DATASET (under the output folder in
--quick mode, which trains one epoch on 64 ATIS examples and scores 50). Datasets not run keep
their previous entries in accuracy.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from benchmarks.load.meta import run_meta
from benchmarks.suite import Suite, datasets_in, save_figure, write_csv, write_json
from export.data import read_dataset
from export.evaluate import evaluate, summary
from export.fetch import resolve_dataset
from export.onnx import build_bundle, is_int8
from export.scoring import pct_text
from export.train import TrainConfig, train
from service.contract.bundle import BundleConfig
from service.contract.paths import PROJECT_ROOT
from service.runtime import Engine
from service.settings import EngineSettings

HEADLINE = ("intent_acc", "slot_f1", "sentence_acc")
VARIANTS = ("torch", "onnx_fp32", "onnx_int8")
PUBLISHED = {  # ../shared/data/README.md: test intent acc / slot F1 / sentence acc
    "atis": {"JointBERT-base": (97.5, 96.1, 88.2), "JointBERT+CRF": (97.98, 95.93, 88.58)},
    "snips": {"JointBERT-base": (98.6, 97.0, 92.8), "JointBERT+CRF": (98.57, 97.24, 93.57)},
}
QUICK = {"limit_train": 64, "epochs": 1, "limit_eval": 50}


class AccuracySuite(Suite):
    name = "accuracy"
    help = "train + export with defaults; torch vs ONNX fp32/int8 on the test splits"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--datasets", nargs="+", default=["atis", "snips"])
        parser.add_argument("--encoder", help="encoder folder or name (default: packaged MiniLM)")

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        root = out_dir if args.quick else PROJECT_ROOT
        datasets = args.datasets[:1] if args.quick else args.datasets
        limits = QUICK if args.quick else {"limit_train": None, "limit_eval": None}
        path = out_dir / "accuracy.json"
        report = json.loads(path.read_text()) if path.is_file() else {}
        meta = run_meta()
        runs = report.get("meta", {}).get("runs", {})
        for name in datasets:
            model_dir, bundle_dir = root / "artifacts" / name, root / "bundles" / name
            cfg = TrainConfig(
                data=name,
                out=str(model_dir),
                encoder=args.encoder,
                limit_train=limits["limit_train"],
            )
            if args.quick:
                cfg.epochs = QUICK["epochs"]
            config = train(cfg)
            result = evaluate(model_dir, name, "test", limit=limits["limit_eval"])
            print(summary(result))
            bundle = build_bundle(model_dir, bundle_dir, limit_eval=limits["limit_eval"])
            onnx = {k: bundle.metrics[k] for k in VARIANTS[1:] if k in bundle.metrics}
            report[name] = {"torch": {k: result[k] for k in HEADLINE}, **onnx}
            runs[name] = run_record(meta, config, result, bundle)
            texts = [ex.text for ex in read_dataset(resolve_dataset(name)).splits["test"]]
            runs[name]["alone_vs_batched"] = alone_vs_batched(
                bundle_dir, texts[: limits["limit_eval"]]
            )
            report["meta"] = {**meta, "runs": runs}
            write_json(path, report)
        write_csv(out_dir / "accuracy.csv", csv_rows(report))
        save_figure(chart(report), out_dir / "accuracy.png")
        return report

    def summary(self, result: dict) -> str:
        return accuracy_table(result)


def run_record(meta: dict, config: dict, result: dict, bundle: BundleConfig) -> dict:
    return {
        "git_commit": meta["git_commit"],
        "date": config["created_at"],
        "test_examples": result["n"],
        "epochs_max": config["train"]["epochs"],
        "epochs_run": config["epochs_run"],
        "best_epoch": config["best_epoch"],
        "train_seconds": config["train_seconds"],
        "seconds_per_epoch": config["seconds_per_epoch"],
        "torch_threads": config["torch_threads"],
        "dev": config["dev"],
        "calibration_dev": config["calibration_dev"],
        "calibration_test": result["calibration"],
        "train_config": config["train"],
        "bundle": {
            "fp32_graph": bundle.variants["fp32"].graph,
            "int8_graph": bundle.variants["int8"].graph if "int8" in bundle.variants else None,
            "fp32_parity_dev_vs_torch": bundle.variants["fp32"].parity_dev_vs_torch,
            # the served int8 graph's drops, or every int8 candidate's when none passed
            "int8_drop_vs_fp32": bundle.variants["int8"].drop_vs_fp32
            if "int8" in bundle.variants
            else {n: c.drop_vs_fp32 for n, c in bundle.candidates.items() if is_int8(n)},
            "fused_operators": bundle.fused_operators,
        },
    }


def alone_vs_batched(bundle_dir: Path, texts: list[str], batch_size: int = 64) -> dict:
    """The served engine on each utterance alone and in shuffled batches (long beside short):
    an answer must not depend on its batch-mates. Percent identical, largest confidence gap."""
    engine = Engine(bundle_dir, settings=EngineSettings())
    alone = [engine.parse([text])[0] for text in texts]
    order = np.random.default_rng(0).permutation(len(texts))
    batched = [None] * len(texts)
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        for i, frame in zip(rows, engine.parse([texts[i] for i in rows]), strict=True):
            batched[i] = frame
    pairs = list(zip(alone, batched, strict=True))
    return {
        "variant": engine.variant,
        "utterances": len(texts),
        "intents_identical": round(100 * np.mean([a.intent == b.intent for a, b in pairs]), 2),
        "tags_identical": round(100 * np.mean([a.word_tags == b.word_tags for a, b in pairs]), 2),
        "max_confidence_gap": float(
            max(abs(a.confidence - b.confidence) for a, b in pairs) if pairs else 0.0
        ),
    }


def csv_rows(report: dict) -> list[dict]:
    return [
        {"dataset": name, "variant": variant, **report[name][variant]}
        for name in datasets_in(report)
        for variant in VARIANTS
        if variant in report[name]
    ]


def chart(report: dict) -> Figure:
    """Grouped bars per metric: our three variants beside the published JointBERT figures."""
    names = datasets_in(report)
    fig = Figure(figsize=(6 * len(names), 4.2))
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        series = {  # an intent-only dataset has no slot F1: a gap, not a zero
            v: [np.nan if report[name][v].get(k) is None else report[name][v][k] for k in HEADLINE]
            for v in VARIANTS
            if v in report[name]
        }
        series |= {f"{ref} (published)": list(v) for ref, v in PUBLISHED.get(name, {}).items()}
        width = 0.8 / len(series)
        x = np.arange(len(HEADLINE))
        for j, (label, values) in enumerate(series.items()):
            bars = ax.bar(x + (j - (len(series) - 1) / 2) * width, values, width, label=label)
            ax.bar_label(bars, fmt="%.1f", fontsize=6, rotation=90, padding=2)
        ax.set_xticks(x, ["intent acc", "slot F1", "sentence acc"])
        low = np.nanmin([np.nanmin(v) for v in series.values()])
        ax.set_ylim(max(0.0, low - 5), 101)
        ax.set_ylabel("% on test")
        ax.set_title(f"{name.upper()} test")
        ax.legend(fontsize=7, loc="lower left")
    return fig


def accuracy_table(report: dict) -> str:
    runs = report.get("meta", {}).get("runs", {})
    rows = [
        "| dataset | model | intent acc | slot F1 | sentence acc | epochs (best) | train time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in datasets_in(report):
        run = runs.get(name, {})
        for variant in VARIANTS:
            if variant not in report[name]:
                continue
            m = report[name][variant]
            rows.append(
                f"| {name} | MiniLM-L6 joint, {variant} | {m['intent_acc']:.2f} | "
                f"{pct_text(m['slot_f1'])} | {m['sentence_acc']:.2f} | "
                f"{run.get('epochs_run', '?')} ({run.get('best_epoch', '?')}) | "
                f"{run.get('train_seconds', 0) / 60:.1f} min |"
            )
        for ref, (i, s, f) in PUBLISHED.get(name, {}).items():
            rows.append(f"| {name} | {ref} (published) | {i:.2f} | {s:.2f} | {f:.2f} | | |")
    for name in datasets_in(report):
        agreement = runs.get(name, {}).get("alone_vs_batched")
        if agreement:
            rows.append(
                f"\n{name}: the served {agreement['variant']} engine on {agreement['utterances']} "
                f"test utterances alone vs in shuffled batches of 64: intents "
                f"{agreement['intents_identical']} % identical, tag sequences "
                f"{agreement['tags_identical']} %, largest confidence gap "
                f"{agreement['max_confidence_gap']:.2g}."
            )
    meta = report.get("meta", {})
    rows += [
        "",
        f"Test splits, percent. From `benchmarks/results/accuracy.json` (commit "
        f"{meta.get('git_commit', '?')[:12]}, {meta.get('cpu', '?')}, {meta.get('cores', '?')} "
        "cores); train time is wall-clock on that machine.",
    ]
    return "\n".join(rows)


SUITE = AccuracySuite()
