"""Training chats for a generator that decides scope: given the encoder's candidate intents, answer
one of them or "none" (the prompt the router's scope decision sends without retrieved examples,
`generator_prompt: plain`).

The candidates come from the served bundle, as at serving time: the encoder's top in-scope
intents for each training utterance. On its own training data the encoder nearly always ranks
the right intent first, so the candidates are shuffled (served, the right one is often second or
third). "none" is the answer for the trained out-of-scope utterances and, so that it means "none
of these" rather than "this looks odd", for a seeded share of in-scope utterances whose right
intent is taken out of the candidates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.data import Example
from service.contract.prompt import NONE
from service.runtime import Engine
from service.settings import EngineSettings

BATCH = 64


@dataclass(frozen=True)
class ScopeChat:
    text: str
    candidates: list[str]
    answer: str  # one of the candidates, or NONE


def ranked_in_scope(engine: Engine, texts: list[str]) -> list[list[str]]:
    """Per text, the bundle's in-scope intents from most to least likely."""
    intents = engine.bundle.labels.intents
    ranked = []
    for start in range(0, len(texts), BATCH):
        for frame in engine.parse(texts[start : start + BATCH]):
            order = np.argsort(-frame.probabilities)  # (I,)
            ranked.append([intents[i] for i in order if intents[i] != engine.trained_label])
    return ranked


def scope_chats(
    examples: list[Example],
    bundle_dir: Path,
    candidates: int,
    none_share: float,
    rng: random.Random,
) -> list[ScopeChat]:
    """One chat per example: the encoder's top `candidates` in-scope intents, shuffled; an
    in-scope example's intent is taken out of them with probability `none_share`."""
    engine = Engine(bundle_dir, settings=EngineSettings())
    chats = []
    for ex, ranked in zip(
        examples, ranked_in_scope(engine, [e.text for e in examples]), strict=True
    ):
        in_scope = ex.intent != engine.trained_label
        if in_scope and rng.random() < none_share:
            ranked = [i for i in ranked if i != ex.intent]
        shown = ranked[:candidates]
        rng.shuffle(shown)
        answer = ex.intent if in_scope and ex.intent in shown else NONE
        chats.append(ScopeChat(ex.text, shown, answer))
    return chats
