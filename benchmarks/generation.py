"""What the `classify-vs-generate` and `tradeoff` suites share: per-utterance answers of the
encoder and of each generator variant, run through the service's own Router.

Generator answers cost seconds each on CPU, so they are cached as JSON lines under
artifacts/generator-cache/ keyed by variant, dataset, split and a hash of everything that changes
the answer (bundle, model, prompt, mode). Both suites and any rerun reuse them; a changed bundle or
checkpoint gets a new key.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.suite import write_json
from export.data import Example, read_dataset
from export.fetch import resolve_dataset
from export.scoring import frame_metrics
from export.train_generator import TRAINING_RECORD
from service.contract.paths import PROJECT_ROOT
from service.contract.text import OUTSIDE_TAG, slots_to_tags
from service.contract.types import Frame
from service.generators.registry import BACKENDS
from service.loading import build_router
from service.router import Router
from service.runtime import Engine
from service.settings import (
    EngineSettings,
    GeneratorMode,
    GeneratorSettings,
    PromptStyle,
    RoutingSettings,
    Settings,
)

CACHE_DIR = PROJECT_ROOT / "artifacts" / "generator-cache"
QUICK_CACHE = "generator-cache"  # under the output folder in --quick mode
INVALID = "<no valid answer>"
GENERATOR_TIMEOUT_S = 120.0  # offline: measure the generator, never cut it short
MAX_NEW_TOKENS = 160  # an ATIS frame with five slots is ~110 tokens


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    mode: GeneratorMode
    prompt: PromptStyle
    model: str  # "" = packaged SmolLM2; may contain {dataset}
    examples_k: int

    def model_path(self, dataset: str) -> str:
        return checkpoint_path(self.model, dataset)

    def missing(self, dataset: str) -> str | None:
        """Why this variant cannot run for `dataset`, or None."""
        return missing_checkpoint(self.model_path(dataset), f"make train-generator DATA={dataset}")


def checkpoint_path(model: str, dataset: str) -> str:
    """A generator's checkpoint folder (`model` may contain {dataset}; relative paths are under
    the project root), or "" for the packaged SmolLM2."""
    path = model.format(dataset=dataset)
    return str(PROJECT_ROOT / path) if path else ""


def missing_checkpoint(path: str, build: str) -> str | None:
    """Why the checkpoint at `path` cannot be loaded (naming what builds it), or None."""
    if path and not (Path(path) / "config.json").is_file():
        return f"{path} does not exist ({build})"
    return None


def model_id(path: str) -> str:
    """What identifies a generator in a cache key: its path and, for a trained checkpoint, when
    it was trained (a retrained one gets a new key)."""
    record = Path(path) / TRAINING_RECORD if path else None
    if record is None or not record.is_file():
        return path
    return f"{path}@{json.loads(record.read_text())['created_at']}"


def add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", nargs="+", default=["atis", "snips"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--lm", default="", help="causal LM folder for every variant (default: each one's own)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bundles", type=Path, default=PROJECT_ROOT / "bundles")


def missing_bundles(args: argparse.Namespace) -> str | None:
    """The suites' skip reason: a dataset without a bundle under --bundles."""
    missing = [d for d in args.datasets if not (args.bundles / d / "config.json").is_file()]
    return f"no bundle for {', '.join(missing)} (make export)" if missing else None


def merge_report(path: Path, results: dict, meta: dict) -> dict:
    """Update the per-dataset result file with this run's datasets (others are kept)."""
    report = json.loads(path.read_text()) if path.is_file() else {}
    report |= results
    report["meta"] = meta
    write_json(path, report)
    return report


def chosen_variants(args: argparse.Namespace) -> list[Variant]:
    return [replace(VARIANTS[n], model=args.lm) if args.lm else VARIANTS[n] for n in args.variants]


def cache_dir(args: argparse.Namespace, out_dir: Path) -> Path:
    return out_dir / QUICK_CACHE if args.quick else CACHE_DIR


VARIANTS = {
    v.name: v
    for v in (
        Variant("few_shot", "few-shot SmolLM2, generate", "generate", "few_shot", "", 4),
        Variant("scorer", "few-shot SmolLM2, score top-3", "score", "few_shot", "", 4),
        Variant(
            "fine_tuned",
            "fine-tuned SmolLM2, generate",
            "generate",
            "plain",
            "artifacts/generator-{dataset}",
            0,
        ),
    )
}


@dataclass(frozen=True)
class EncoderAnswer:
    intent: str
    tags: list[str]
    confidence: float
    ms: float


@dataclass(frozen=True)
class GeneratorAnswer:
    """The generator path for one utterance: its frame when valid, else the fallback reason.
    `ms` is the router's wall time (prompt, retrieval, generation, validation)."""

    intent: str | None
    tags: list[str] | None
    reason: str
    ms: float
    text: str

    @property
    def valid(self) -> bool:
        return self.intent is not None


def load_split(dataset: str, split: str) -> list[Example]:
    return read_dataset(resolve_dataset(dataset), dataset).splits[split]


def sample_indices(n: int, size: int, seed: int) -> list[int]:
    """A seeded sample (sorted), or every index when size >= n."""
    if size >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), size))


def open_engine(bundle_dir: Path) -> Engine:
    """One intra-op thread: the measurements run beside a 1-thread generator on 2 cores."""
    settings = EngineSettings(
        variant="int8", intra_op_threads=1, inter_op_threads=1, ort_allow_spinning=False
    )
    return Engine(bundle_dir, settings=settings)


def encoder_answers(
    engine: Engine, examples: list[Example]
) -> tuple[list[EncoderAnswer], list[Frame]]:
    """Batch-1 answers, timed (tokenise + ONNX + decode), and the frames the router needs. An
    out-of-scope answer is scored as the dataset's out-of-scope label (CLINC150's `oos`)."""
    engine.warm_up(3, 1)
    oos_label = engine.open_world.trained_label
    answers, frames = [], []
    for ex in tqdm(examples, desc="encoder", unit="utt", leave=False, disable=None):
        started = time.perf_counter()
        frame = engine.parse([ex.text])[0]
        ms = (time.perf_counter() - started) * 1000
        frames.append(frame)
        intent = oos_label if frame.out_of_scope and oos_label else frame.intent
        answers.append(EncoderAnswer(intent, frame.word_tags, frame.confidence, ms))
    return answers, frames


def cached_rows(
    path: Path, indices: list[int], compute: Callable[[int], dict], desc: str
) -> dict[int, dict]:
    """The rows of `indices` from a JSON-lines cache keyed by utterance index; missing ones are
    computed and appended one by one, so an interrupted run keeps what it paid for."""
    cached: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            index = row.pop("index")
            cached[index] = row
    missing = [i for i in indices if i not in cached]
    if missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            for i in tqdm(missing, desc=desc, unit="utt", disable=None):
                cached[i] = compute(i)
                f.write(json.dumps({"index": i, **cached[i]}) + "\n")
                f.flush()
    return {i: cached[i] for i in indices}


class GeneratorRunner:
    """Answers of one variant on one dataset, computed on demand and cached per utterance."""

    def __init__(
        self, variant: Variant, dataset: str, bundle_dir: Path, engine: Engine, cache: Path
    ) -> None:
        self.variant, self.dataset, self.cache = variant, dataset, cache
        self.bundle_dir, self.engine = bundle_dir, engine
        self.router: Router | None = None
        max_tokens = MAX_NEW_TOKENS if variant.mode == "generate" else None
        key = json.dumps(
            [
                asdict(variant),
                engine.bundle.config_sha256,
                model_id(variant.model_path(dataset)),
                max_tokens,
            ],
            sort_keys=True,
        )
        self.key = hashlib.sha256(key.encode()).hexdigest()[:12]

    def cache_path(self, split: str) -> Path:
        return self.cache / f"{self.variant.name}-{self.dataset}-{split}-{self.key}.jsonl"

    def start(self) -> Router:
        if self.router is None:
            v = self.variant
            generator = GeneratorSettings(
                generator_backend="local",
                generator_model=v.model_path(self.dataset),
                generator_threads=1,
                generator_max_tokens=MAX_NEW_TOKENS,
            )
            # The raw backend, without the serving breaker: every utterance is measured.
            backend = BACKENDS["local"].from_settings(generator)
            backend.load()
            routing = RoutingSettings(
                generator_timeout_s=GENERATOR_TIMEOUT_S,
                retrieval_k=v.examples_k,
                generator_mode=v.mode,
                generator_prompt=v.prompt,
            )
            self.router = build_router(self.engine, Settings(routing=routing), backend)
        return self.router

    def answers(
        self, split: str, examples: list[Example], frames: list[Frame], indices: list[int]
    ) -> dict[int, GeneratorAnswer]:
        rows = cached_rows(
            self.cache_path(split),
            indices,
            lambda i: asdict(asyncio.run(self.one(self.start(), examples[i], frames[i]))),
            f"{self.variant.name} {self.dataset}/{split}",
        )
        return {i: GeneratorAnswer(**row) for i, row in rows.items()}

    @staticmethod
    async def one(router: Router, ex: Example, frame: Frame) -> GeneratorAnswer:
        started = time.perf_counter()
        routed = await router.route(frame, force=True, threshold=1.0, remaining_s=None)
        ms = (time.perf_counter() - started) * 1000
        if not routed.from_generator:
            return GeneratorAnswer(None, None, routed.fallback_reason, ms, routed.generated_text)
        tags = slots_to_tags(ex.words, routed.slots)
        return GeneratorAnswer(routed.intent, tags, "", ms, routed.generated_text)


def headline(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("n", "intent_acc", "slot_f1", "sentence_acc")}


def score(
    examples: list[Example], intents: list[str], tags: list[list[str]], known: tuple[str, ...]
) -> dict:
    return frame_metrics(
        [ex.intent for ex in examples], intents, [list(ex.tags) for ex in examples], tags, known
    )


def generator_frames(
    examples: list[Example], answers: list[GeneratorAnswer]
) -> tuple[list[str], list[list[str]]]:
    """The generator alone: an invalid answer counts as a wrong intent and all-O tags."""
    intents = [a.intent if a.valid else INVALID for a in answers]
    tags = [
        a.tags if a.valid else [OUTSIDE_TAG] * len(ex.words)
        for ex, a in zip(examples, answers, strict=True)
    ]
    return intents, tags  # type: ignore[return-value]


def latency(ms: list[float]) -> dict:
    arr = np.asarray(ms)
    return {
        "mean_ms": round(float(arr.mean()), 2),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "utterances_per_s": round(1000.0 / float(arr.mean()), 2),
    }
