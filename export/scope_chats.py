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
from export.onnx import session
from service.contract.bundle import TOKENIZER, Bundle, load_bundle
from service.contract.graph import OUTPUTS, onnx_feeds
from service.contract.prompt import NONE
from service.contract.text import encode_texts, load_tokenizer, softmax


@dataclass(frozen=True)
class ScopeChat:
    text: str
    candidates: list[str]
    answer: str  # one of the candidates, or NONE


def ranked_in_scope(bundle: Bundle, texts: list[str]) -> list[list[str]]:
    """Per text, the bundle's in-scope intents from most to least likely: its served graph run
    one utterance at a time, as the engine runs it (an int8 graph's answer depends on its batch)."""
    config = bundle.config
    sess = session(bundle.model_file(config.served_variant))
    tokenizer = load_tokenizer(bundle.path / TOKENIZER, config.max_seq_len)
    trained = config.trained_out_of_scope_label
    intents = bundle.labels.intents
    ranked = []
    for text in texts:
        enc = encode_texts(tokenizer, [text])
        logits, *_ = sess.run(list(OUTPUTS), onnx_feeds(enc, config.inputs))  # (1, I)
        order = np.argsort(-softmax(logits[0].astype(np.float64), config.temperature))  # (I,)
        ranked.append([intents[i] for i in order if intents[i] != trained])
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
    bundle = load_bundle(bundle_dir)
    trained = bundle.config.trained_out_of_scope_label
    chats = []
    rankings = ranked_in_scope(bundle, [ex.text for ex in examples])
    for ex, ranked in zip(examples, rankings, strict=True):
        in_scope = ex.intent != trained
        if in_scope and rng.random() < none_share:
            ranked = [i for i in ranked if i != ex.intent]
        shown = ranked[:candidates]
        rng.shuffle(shown)
        answer = ex.intent if in_scope and ex.intent in shown else NONE
        chats.append(ScopeChat(ex.text, shown, answer))
    return chats
