"""Train with the default settings on each dataset, export the bundle, score the test split.

    python -m benchmarks.accuracy [--datasets atis snips]

Writes benchmarks/results/accuracy.json (torch, onnx_fp32 and onnx_int8 per dataset); datasets
not run keep their previous entries. Models go to artifacts/DATASET, bundles to bundles/DATASET.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from benchmarks.meta import PROJECT_ROOT, run_meta
from export.evaluate import evaluate, summary
from export.onnx import build_bundle
from export.train import TrainConfig, train

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "accuracy.json"
HEADLINE = ("intent_acc", "slot_f1", "sentence_acc")


def run(datasets: list[str], artifacts_root: Path, bundles_root: Path, results: Path) -> dict:
    report = json.loads(results.read_text()) if results.is_file() else {}
    meta = run_meta()
    runs = report.get("meta", {}).get("runs", {})
    for name in datasets:
        out = artifacts_root / name
        config = train(TrainConfig(data=name, out=str(out)))
        result = evaluate(out, name, "test")
        print(summary(result))
        bundle = build_bundle(out, bundles_root / name)
        report[name] = {
            "torch": {k: result[k] for k in HEADLINE},
            "onnx_fp32": bundle["metrics"]["onnx_fp32"],
            "onnx_int8": bundle["metrics"]["onnx_int8"],
        }
        runs[name] = {
            "git_commit": meta["git_commit"],
            "date": config["created_at"],
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
                "fp32_graph": bundle["variants"]["fp32"]["graph"],
                "int8_graph": bundle["variants"]["int8"]["graph"],
                "fp32_parity_dev_vs_torch": bundle["variants"]["fp32"]["parity_dev_vs_torch"],
                "int8_drop_vs_fp32": bundle["variants"]["int8"]["drop_vs_fp32"],
                "fused_operators": bundle["fused_operators"],
            },
        }
        report["meta"] = {**meta, "runs": runs}
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["atis", "snips"])
    p.add_argument("--artifacts", type=Path, default=PROJECT_ROOT / "artifacts")
    p.add_argument("--bundles", type=Path, default=PROJECT_ROOT / "bundles")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    run(args.datasets, args.artifacts, args.bundles, args.results)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
