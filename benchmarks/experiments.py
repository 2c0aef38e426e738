"""Training variants tried against the defaults, each selected and compared on dev; the test
figures are reported beside them but never used to choose.

    python -m benchmarks.experiments --data atis --variants crf head_lr [--threads 1]

Each variant writes benchmarks/results/experiments/DATASET-VARIANT.json, so variants can run as
separate processes side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from benchmarks.meta import PROJECT_ROOT, run_meta
from export.evaluate import evaluate
from export.train import TrainConfig, train

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "experiments"
HEADLINE = ("intent_acc", "slot_f1", "sentence_acc")
VARIANTS: dict[str, dict] = {
    "baseline": {},
    "crf": {"crf": True},
    "crf_head_lr": {"crf": True, "head_lr": 1e-3},
    "head_lr": {"head_lr": 1e-3},
    "mean_pool": {"pooling": "mean"},
    "label_smoothing": {"label_smoothing": 0.1},
    "alpha_0.3": {"alpha": 0.3},
    "epochs_20": {"epochs": 20, "patience": 6},
}


def run_variant(data: str, variant: str, threads: int | None, results: Path) -> dict:
    out = PROJECT_ROOT / "artifacts" / "experiments" / f"{data}-{variant}"
    cfg = dataclasses.replace(
        TrainConfig(data=data, out=str(out), threads=threads), **VARIANTS[variant]
    )
    config = train(cfg)
    test = evaluate(out, data, "test")
    record = {
        "dataset": data,
        "variant": variant,
        "overrides": VARIANTS[variant],
        "dev": config["dev"],
        "test": {k: test[k] for k in HEADLINE},
        "best_epoch": config["best_epoch"],
        "epochs_run": config["epochs_run"],
        "train_seconds": config["train_seconds"],
        "torch_threads": config["torch_threads"],
        "calibration_dev": config["calibration_dev"],
        "meta": run_meta(),
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{data}-{variant}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="atis")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), required=True)
    p.add_argument("--threads", type=int, help="torch threads per run (default: all cores)")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    for variant in args.variants:
        record = run_variant(args.data, variant, args.threads, args.results)
        print(f"{args.data} {variant}: dev {record['dev']}  test {record['test']}")


if __name__ == "__main__":
    main()
