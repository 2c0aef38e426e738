"""The trained-model folder written by `export.train` and read by evaluation and ONNX export.

Layout: `model.safetensors` (joint model weights), `encoder/config.json` (encoder architecture),
`tokenizer.json`, `labels.json`, `config.json` (plain JSON: training settings, temperature,
dev metrics, timings), `train_log.jsonl` (one line per epoch).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer

from export.model import JointModel, encoder_from_config
from service.contract.labels import LabelSet
from service.contract.text import load_tokenizer

WEIGHTS = "model.safetensors"
ENCODER_CONFIG_DIR = "encoder"
TOKENIZER = "tokenizer.json"
LABELS = "labels.json"
CONFIG = "config.json"
TRAIN_LOG = "train_log.jsonl"


@dataclass
class Artifacts:
    model: JointModel
    tokenizer: Tokenizer
    labels: LabelSet
    config: dict


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def tokenizer_file(encoder_dir: Path) -> Path:
    path = encoder_dir / TOKENIZER
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the encoder folder has no fast-tokenizer file")
    return path


def save_artifacts(
    out: Path, model: JointModel, tokenizer_src: Path, labels: LabelSet, config: dict
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / WEIGHTS))
    model.encoder.config.save_pretrained(str(out / ENCODER_CONFIG_DIR))
    if tokenizer_src.resolve() != (out / TOKENIZER).resolve():
        shutil.copyfile(tokenizer_src, out / TOKENIZER)
    write_json(out / LABELS, labels.to_json())
    write_json(out / CONFIG, config)


def load_artifacts(model_dir: Path, attn_implementation: str | None = None) -> Artifacts:
    """Rebuild the joint model from a trained-model folder (no pretrained weights needed)."""
    for name in (WEIGHTS, TOKENIZER, LABELS, CONFIG, f"{ENCODER_CONFIG_DIR}/config.json"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(
                f"{model_dir / name}: missing; is {model_dir} a folder written by export.train?"
            )
    config = json.loads((model_dir / CONFIG).read_text(encoding="utf-8"))
    labels = LabelSet.from_json(json.loads((model_dir / LABELS).read_text(encoding="utf-8")))
    train = config["train"]
    model = JointModel(
        encoder_from_config(model_dir / ENCODER_CONFIG_DIR, attn_implementation),
        len(labels.intents),
        len(labels.slot_tags),
        pooling=train["pooling"],
        dropout=train["dropout"],
        crf=train["crf"],
    )
    load_model(model, str(model_dir / WEIGHTS))
    model.eval()
    tokenizer = load_tokenizer(model_dir / TOKENIZER, train["max_seq_len"])
    return Artifacts(model, tokenizer, labels, config)
