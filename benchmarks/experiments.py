"""Suite `experiments`: training variants tried against the defaults, compared on dev; the test
figures are reported beside them but never used to choose.

    python -m benchmarks experiments --data atis --variants crf head_lr [--threads 1]

Each variant writes results/experiments/DATASET-VARIANT.json, so variants can run as separate
processes side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from benchmarks.load.meta import run_meta
from benchmarks.suite import Suite
from export.evaluate import evaluate
from export.scoring import pct_text
from export.train import TrainConfig, train
from service.contract.paths import PROJECT_ROOT

HEADLINE = ("intent_acc", "slot_f1", "sentence_acc")
# Overrides of TrainConfig. The defaults were a plain joint model (no CRF, one learning rate)
# until crf_head_lr won on ATIS dev; "baseline" pins that plain model so the comparison stays.
PLAIN = {"crf": False, "head_lr": None}
VARIANTS: dict[str, dict] = {
    "baseline": PLAIN,
    "crf": {"crf": True, "head_lr": None},
    "crf_head_lr": {"crf": True, "head_lr": 1e-3},
    "head_lr": {"crf": False, "head_lr": 1e-3},
    "mean_pool": {**PLAIN, "pooling": "mean"},
    "crf_head_lr_mean_pool": {"crf": True, "head_lr": 1e-3, "pooling": "mean"},
    "label_smoothing": {**PLAIN, "label_smoothing": 0.1},
    "alpha_0.3": {**PLAIN, "alpha": 0.3},
}


QUICK = {"limit_train": 64, "epochs": 1, "limit_eval": 50}


def run_variant(args: argparse.Namespace, variant: str, out_dir: Path) -> dict:
    """Train one variant (a small sample with --quick, its model under out_dir), score it on
    test, write its record to out_dir/experiments/."""
    data, name = args.data, Path(args.data).name
    artifacts = out_dir if args.quick else PROJECT_ROOT
    out = artifacts / "artifacts" / "experiments" / f"{name}-{variant}"
    cfg = dataclasses.replace(
        TrainConfig(data=data, out=str(out), threads=args.threads, encoder=args.encoder),
        **VARIANTS[variant],
    )
    if args.quick:
        cfg = dataclasses.replace(cfg, epochs=QUICK["epochs"], limit_train=QUICK["limit_train"])
    config = train(cfg)
    test = evaluate(out, data, "test", limit=QUICK["limit_eval"] if args.quick else None)
    record = {
        "dataset": data,
        "variant": variant,
        "overrides": VARIANTS[variant],
        "train_config": config["train"],
        "dev": config["dev"],
        "test": {k: test[k] for k in HEADLINE},
        "best_epoch": config["best_epoch"],
        "epochs_run": config["epochs_run"],
        "train_seconds": config["train_seconds"],
        "torch_threads": config["torch_threads"],
        "calibration_dev": config["calibration_dev"],
        "meta": run_meta(),
    }
    results = out_dir / "experiments"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}-{variant}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


class ExperimentsSuite(Suite):
    name = "experiments"
    help = "training variants against the defaults, compared on dev (long: run by name)"
    in_default_run = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", default="atis")
        parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["baseline"])
        parser.add_argument("--threads", type=int, help="torch threads per run (default: all)")
        parser.add_argument("--encoder", help="encoder folder (default: packaged MiniLM)")

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        for variant in args.variants:
            record = run_variant(args, variant, out_dir)
            print(f"{args.data} {variant}: dev {record['dev']}  test {record['test']}")
        return self.load_result(out_dir)

    def load_result(self, results: Path) -> dict | None:
        folder = results / "experiments"
        return collect(folder) if folder.is_dir() and any(folder.glob("*.json")) else None

    def summary(self, result: dict) -> str:
        lines = [
            "| dataset | variant | dev intent | dev slot F1 | dev sentence | test intent | "
            "test slot F1 | test sentence | best epoch | train time |",
            "|---" * 10 + "|",
        ]
        for r in result["records"]:
            d, t = r["dev"], r["test"]
            lines.append(
                f"| {r['dataset']} | {r['variant']} {r['overrides'] or ''} | "
                f"{d['intent_acc']:.2f} | {pct_text(d['slot_f1'])} | {d['sentence_acc']:.2f} | "
                f"{t['intent_acc']:.2f} | {pct_text(t['slot_f1'])} | {t['sentence_acc']:.2f} | "
                f"{r['best_epoch']}/{r['epochs_run']} | {r['train_seconds'] / 60:.1f} min "
                f"({r['torch_threads']} thr) |"
            )
        return "\n".join(lines)


def collect(folder: Path) -> dict:
    """All variant records, sorted by dataset then dev sentence accuracy."""
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    records.sort(key=lambda r: (r["dataset"], -r["dev"]["sentence_acc"]))
    return {"records": records}


SUITE = ExperimentsSuite()
