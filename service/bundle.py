"""The model bundle: the only thing that travels from `export/` to `service/`.

A directory holding `model.onnx` (fp32), `model.int8.onnx`, `tokenizer.json`, `labels.json` and
`config.json`; `config.json["files"]` maps every other file to its sha256, and a bundle whose
files do not match is refused with a message naming the file. Shared by the exporter (which
writes it) and the server (which verifies and loads it); no torch here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.text import CrfParams

CONFIG = "config.json"
FP32_MODEL = "model.onnx"
INT8_MODEL = "model.int8.onnx"
TOKENIZER = "tokenizer.json"
LABELS = "labels.json"
VARIANT_FILES = {"fp32": FP32_MODEL, "int8": INT8_MODEL}


class BundleError(ValueError):
    """A bundle that must not be served; the message names the offending file."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    config: dict
    config_sha256: str  # identifies the bundle: config.json records every other file's sha256
    intents: tuple[str, ...]
    slot_tags: tuple[str, ...]
    crf: CrfParams | None

    @property
    def temperature(self) -> float:
        return float(self.config["temperature"])

    @property
    def max_seq_len(self) -> int:
        return int(self.config["max_seq_len"])

    @property
    def input_names(self) -> list[str]:
        return list(self.config["inputs"])

    def model_file(self, variant: str) -> Path:
        if variant not in VARIANT_FILES:
            raise BundleError(f"unknown model variant {variant!r} (expected fp32 or int8)")
        return self.path / VARIANT_FILES[variant]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_checksums(bundle_dir: Path) -> dict[str, str]:
    """sha256 of every file in the bundle except config.json, keyed by relative path."""
    return {
        str(p.relative_to(bundle_dir)): sha256_file(p)
        for p in sorted(bundle_dir.rglob("*"))
        if p.is_file() and p.name != CONFIG
    }


def read_config(bundle_dir: Path) -> tuple[dict, str]:
    """The parsed config.json and the sha256 of its bytes (the bundle's identity)."""
    path = bundle_dir / CONFIG
    if not path.is_file():
        raise BundleError(f"{path}: missing; is {bundle_dir} a model bundle?")
    data = path.read_bytes()
    try:
        return json.loads(data), hashlib.sha256(data).hexdigest()
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from e


def verify(bundle_dir: Path) -> tuple[dict, str]:
    """Check every recorded file exists and matches its sha256; returns read_config's pair."""
    config, config_sha256 = read_config(bundle_dir)
    recorded: dict[str, str] = config.get("files", {})
    for required in (FP32_MODEL, INT8_MODEL, TOKENIZER, LABELS):
        if required not in recorded:
            raise BundleError(f"{bundle_dir / CONFIG}: no checksum recorded for {required}")
    for name, expected in recorded.items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle")
        if sha256_file(path) != expected:
            raise BundleError(f"{path}: sha256 does not match config.json (altered or corrupt)")
    return config, config_sha256


def load_bundle(bundle_dir: Path) -> Bundle:
    """Verify, then read the label maps (and CRF parameters when the model has a CRF)."""
    config, config_sha256 = verify(bundle_dir)
    labels = json.loads((bundle_dir / LABELS).read_text(encoding="utf-8"))
    crf = labels.get("crf")
    crf_params = (
        tuple(np.asarray(crf[k], dtype=np.float64) for k in ("start", "end", "transitions"))
        if crf
        else None
    )
    return Bundle(
        bundle_dir,
        config,
        config_sha256,
        tuple(labels["intents"]),
        tuple(labels["slot_tags"]),
        crf_params,
    )
