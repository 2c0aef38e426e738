"""The model bundle: the only thing that travels from `export/` to `service/`.

A directory holding `model.onnx` (fp32), `model.int8.onnx`, `model.fp16.onnx` (for GPUs),
`tokenizer.json`, `labels.json`,
the retrieval index and `config.json`; a slim bundle (`export.slim`, for images) holds only the
served variant's graph and verifies the same way. `config.json` is a `BundleConfig`: typed,
versioned (`format_version`), and `files` maps every other file to its sha256. The writer (the
exporter) and the reader (the server, `export.verify`) both go through this module; a bundle whose
files do not match, or whose format this code does not know, is refused with a message naming the
file. No torch here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from service.contract.labels import LabelSet
from service.contract.oos import Method
from service.contract.text import CrfParams

FORMAT_VERSION = 1
"""The bundle layout this code writes and reads; bump it when a reader of the old one would
misread the new one."""
CONFIG = "config.json"
FP32_MODEL = "model.onnx"
INT8_MODEL = "model.int8.onnx"
FP16_MODEL = "model.fp16.onnx"
TOKENIZER = "tokenizer.json"
LABELS = "labels.json"
Variant = Literal["fp32", "int8", "fp16"]
VARIANT_FILES: dict[str, str] = {"fp32": FP32_MODEL, "int8": INT8_MODEL, "fp16": FP16_MODEL}
CPU_VARIANTS = ("fp32", "int8")
"""The variants the CPU provider runs in their own precision (fp16 runs there through casts)."""


class BundleError(ValueError):
    """A bundle that must not be served; the message names the offending file."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CandidateReport(_Record):
    """How one exported graph did: dev metrics (what the export chooses on), test metrics
    (reported only), batch-1 latency, and its gates."""

    test: dict[str, float]
    batch1_p50_ms: float
    dev: dict[str, float] | None = None  # None in bundles exported before the choice read dev
    parity_dev_vs_torch: dict[str, float] | None = None  # fp32 and fp16 graphs
    drop_vs_fp32: dict[str, float] | None = None  # int8 and fp16 graphs, on test (reported)
    dev_drop_vs_fp32: dict[str, float] | None = None  # int8 (the gate) and fp16 graphs, on dev


class VariantRecord(CandidateReport):
    """The graph chosen for a variant and the file it was copied to."""

    file: str
    graph: str


class TrainingRecord(_Record):
    dev: dict[str, Any]
    best_epoch: int
    train_seconds: float
    created_at: str


class DetectorReport(_Record):
    """One out-of-scope method on dev at its chosen threshold, in percent (None: dev has no
    out-of-scope utterances to measure it on)."""

    threshold: float | None
    in_scope_accuracy: float
    oos_recall: float | None
    oos_precision: float | None
    oos_f1: float | None


class ExtensionRule(_Record):
    """The similarity rule that lets an extension intent answer (`service.open_world`), chosen
    at export without out-of-scope data: some trained intents are left out of the reference
    data, added back from a few dev examples each, and the rule that recognises most of them
    while costing the other intents at most the stated points on dev wins."""

    threshold: float
    margin: float
    compared_with: Literal["nearest", "density"] = "nearest"
    """What an extension intent's nearest example is compared with: the best trained intent's
    nearest training utterance, or ("density") its training utterance as near as the nearest of
    as many examples as the extension intent has (`service.contract.oos.density_ranks`)."""
    chosen_by: str
    dev_added_accuracy: float | None = None
    dev_others_loss: float | None = None


class OutOfScopeRecord(_Record):
    """How the bundle decides out-of-scope (`service.contract.oos`), chosen on dev at export."""

    method: Method
    threshold: float | None
    trained_label: str | None
    """The dataset's out-of-scope label the model learned as a class (CLINC150: `oos`)."""
    in_scope_budget: float
    """% of the dev in-scope utterances the threshold may flag (its false-rejection budget)."""
    chosen_by: str
    dev: dict[str, DetectorReport]
    extension: ExtensionRule | None = None
    """None in bundles from before the rule was chosen at export: the kNN dev threshold and a
    zero margin."""


class BundleConfig(_Record):
    format_version: int = FORMAT_VERSION
    encoder: str
    max_seq_len: int
    temperature: float  # calibration: intent logits are divided by it before the softmax
    dataset: str
    crf: bool
    inputs: list[str]
    outputs: list[str]
    opset: int
    variants: dict[Variant, VariantRecord]
    served_variant: Variant = "int8"
    """The graph the service runs unless told otherwise: int8 when one passed the export's
    gates, else fp32 (the int8 graph is then not in the bundle)."""
    candidates: dict[str, CandidateReport]
    evaluated_examples: dict[str, int]
    retrieval_examples: int
    fused_operators: dict[str, int]
    metrics: dict[str, dict[str, float]]
    train: TrainingRecord
    source_model: str
    created_at: str
    files: dict[str, str] = {}  # relative path → sha256 of every file but config.json
    out_of_scope: OutOfScopeRecord | None = None
    """None in bundles from before out-of-scope detection: served as method "off"."""
    derived_from: str | None = None
    """A slim bundle (served variants only, for images): the sha256 of the full bundle's
    config.json it was cut from."""

    @property
    def trained_out_of_scope_label(self) -> str | None:
        """The out-of-scope class the model learned (CLINC150's `oos`), never answered as
        itself; None for a bundle without one."""
        return self.out_of_scope.trained_label if self.out_of_scope is not None else None


@dataclass(frozen=True)
class Bundle:
    path: Path
    config: BundleConfig
    config_sha256: str  # identifies the bundle: config.json records every other file's sha256
    labels: LabelSet
    crf: CrfParams | None

    @property
    def model_version(self) -> str:
        """Dataset name plus the start of the bundle's identity (its config.json's sha256)."""
        return f"{self.config.dataset}-{self.config_sha256[:12]}"

    def model_file(self, variant: str) -> Path:
        if variant not in VARIANT_FILES:
            raise BundleError(
                f"unknown model variant {variant!r} (expected {', '.join(VARIANT_FILES)})"
            )
        if variant not in self.config.variants:
            raise BundleError(
                f"{self.path / CONFIG}: this bundle holds only {', '.join(self.config.variants)} "
                f"(a slim bundle keeps the graphs it was cut with; a graph that failed its export "
                f"gate is left out); serve one of those or mount a full bundle"
            )
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


def write_labels(bundle_dir: Path, labels: LabelSet, crf: CrfParams | None) -> None:
    data: dict[str, Any] = labels.to_json()
    if crf is not None:
        start, end, transitions = crf
        data["crf"] = {
            "start": start.tolist(),
            "end": end.tolist(),
            "transitions": transitions.tolist(),
        }
    (bundle_dir / LABELS).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_config(bundle_dir: Path, config: BundleConfig) -> BundleConfig:
    """Record the sha256 of every file now in the bundle, then write config.json (last)."""
    final = config.model_copy(update={"files": file_checksums(bundle_dir)})
    (bundle_dir / CONFIG).write_text(final.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return final


def read_config(bundle_dir: Path) -> tuple[BundleConfig, str]:
    """The typed config.json and the sha256 of its bytes (the bundle's identity)."""
    path = bundle_dir / CONFIG
    if not path.is_file():
        raise BundleError(f"{path}: missing; is {bundle_dir} a model bundle?")
    data = path.read_bytes()
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from e
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {version!r} is not one this server reads "
            f"({FORMAT_VERSION}); export the bundle again with this version of the project"
        )
    try:
        return BundleConfig.model_validate(raw), hashlib.sha256(data).hexdigest()
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise BundleError(f"{path}: not a valid bundle config ({problems})") from e


def verify(bundle_dir: Path) -> tuple[BundleConfig, str]:
    """Check every recorded file exists and matches its sha256; returns read_config's pair."""
    config, config_sha256 = read_config(bundle_dir)
    graphs = [VARIANT_FILES[variant] for variant in config.variants]
    for required in (*graphs, TOKENIZER, LABELS):
        if required not in config.files:
            raise BundleError(f"{bundle_dir / CONFIG}: no checksum recorded for {required}")
    for name, expected in config.files.items():
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
    return Bundle(bundle_dir, config, config_sha256, LabelSet.from_json(labels), crf_params)
