"""Evaluate a trained model on one split; prints a summary and writes the full JSON.

python -m export.evaluate --model artifacts/atis --data atis --split test
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import torch

from export.artifacts import load_artifacts, write_json
from export.calibration import expected_calibration_error, softmax
from export.data import read_dataset
from export.fetch import INPUT_ERRORS, resolve_dataset
from export.inference import evaluate_examples
from export.scoring import pct_text


def evaluate(
    model_dir: Path, data: str, split: str, batch_size: int = 64, limit: int | None = None
) -> dict:
    artifacts = load_artifacts(model_dir)
    dataset = read_dataset(resolve_dataset(data), seed=artifacts.config["train"]["seed"])
    if split not in dataset.splits:
        raise SystemExit(f"{dataset.source}: no {split!r} split")
    examples = dataset.splits[split][:limit]
    metrics, outputs = evaluate_examples(
        artifacts.model, artifacts.tokenizer, examples, artifacts.labels, batch_size
    )
    gold = np.array([artifacts.labels.intent_id(ex.intent) for ex in examples])
    temperature = artifacts.config["temperature"]
    metrics["calibration"] = {
        "temperature": temperature,
        "ece_uncalibrated": expected_calibration_error(softmax(outputs.intent_logits), gold),
        "ece_calibrated": expected_calibration_error(
            softmax(outputs.intent_logits, temperature), gold
        ),
    }
    return {"model": str(model_dir), "dataset": dataset.name, "split": split, **metrics}


def summary(result: dict) -> str:
    lines = [
        f"{result['dataset']} {result['split']} (n={result['n']}): intent acc "
        f"{result['intent_acc']:.2f}  slot F1 {pct_text(result['slot_f1'])}  sentence acc "
        f"{result['sentence_acc']:.2f}",
        f"ECE {result['calibration']['ece_uncalibrated']:.2f} % uncalibrated → "
        f"{result['calibration']['ece_calibrated']:.2f} % at T="
        f"{result['calibration']['temperature']}",
    ]
    if result["unseen_intents"]:
        lines.append(
            "intents unseen in training (always wrong): " + ", ".join(result["unseen_intents"])
        )
    if result["worst_slot_types"]:
        lines.append(
            "worst slot types (F1, support): "
            + ", ".join(
                f"{r['slot']} {r['f1']:.1f} ({r['support']})"
                for r in result["worst_slot_types"][:5]
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "WARNING"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="folder written by export.train")
    p.add_argument("--data", required=True, help="dataset name or folder")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--out", type=Path, help="JSON path (default: MODEL/eval-DATASET-SPLIT.json)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = evaluate(args.model, args.data, args.split, args.batch_size)
    except INPUT_ERRORS as e:
        raise SystemExit(f"error: {e}") from e
    out = args.out or args.model / f"eval-{result['dataset']}-{args.split}.json"
    write_json(out, result)
    print(summary(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
