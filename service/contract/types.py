"""The domain types every layer passes around: what the encoder answers, what routing chose, what
a caller asked for. Plain dataclasses (numpy only), so no module imports an implementation just
for a type."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


@dataclass(frozen=True)
class Slot:
    """A decoded slot: `value == text[start:end]` of the utterance it came from."""

    name: str
    value: str
    start: int
    end: int
    confidence: float


@dataclass(frozen=True)
class ExtensionIntent:
    """An intent added without retraining (`service.extensions`)."""

    name: str
    description: str
    examples: tuple[str, ...]


@dataclass(frozen=True)
class ExtensionMatch:
    """An extension intent close enough to an utterance to be a candidate for it."""

    intent: ExtensionIntent
    similarity: float  # cosine similarity of its nearest example


@dataclass(frozen=True)
class IntentScore:
    label: str
    probability: float


@dataclass(frozen=True)
class Frame:
    """The encoder's answer for one utterance. Out of scope, `intent` is the server's
    out-of-scope intent and `confidence` 1 - the best in-scope intent's probability."""

    text: str
    intent: str
    confidence: float  # calibrated probability of `intent`
    top_intents: list[IntentScore]
    probabilities: np.ndarray  # (I,) calibrated, in bundle intent order
    slots: list[Slot]
    word_tags: list[str]
    min_tag_confidence: float  # lowest per-word probability of the chosen tag
    embedding: np.ndarray  # (H,) L2-normalised
    truncated_words: int
    out_of_scope: bool = False  # then `intent` is the out-of-scope intent name
    in_scope_score: float = 0.0  # the bundle's out-of-scope detector score (higher: in scope)
    extension: bool = False  # `intent` is an extension intent; `confidence` its cosine similarity
    # extension intents whose nearest example passes the similarity threshold, best first
    extension_candidates: tuple[ExtensionMatch, ...] = ()
    best_in_scope: IntentScore | None = None  # the best trained in-scope intent (None: `intent`)

    @property
    def encoder_answer(self) -> IntentScore:
        """The encoder's own guess: out of scope, still the best in-scope intent it saw."""
        if self.out_of_scope and self.best_in_scope is not None:
            return self.best_in_scope
        return IntentScore(self.intent, self.confidence)


@dataclass(frozen=True)
class RawOutputs:
    """The graph's outputs for one batch, before decoding."""

    intent_logits: np.ndarray  # (B, I)
    slot_logits: np.ndarray  # (B, T, S)
    embedding: np.ndarray  # (B, H)


@dataclass(frozen=True)
class Encoded:
    """One utterance's encoder answer and where its time went (milliseconds)."""

    frame: Frame
    queue_ms: float
    tokenize_ms: float
    inference_ms: float
    decode_ms: float


@dataclass(frozen=True)
class Routed:
    """The answer chosen for one utterance."""

    from_generator: bool
    intent: str
    confidence: float  # the encoder's calibrated probability of `intent`
    slots: list[Slot]
    fallback_reason: str = ""
    generator_ms: float = 0.0
    generated_text: str = ""
    out_of_scope: bool = False
    extension: bool = False

    @classmethod
    def from_encoder(cls, frame: Frame) -> Routed:
        return cls(
            False,
            frame.intent,
            frame.confidence,
            frame.slots,
            out_of_scope=frame.out_of_scope,
            extension=frame.extension,
        )


class Policy(Enum):
    DEFAULT = "default"
    ENCODER_ONLY = "encoder_only"
    GENERATOR_ONLY = "generator_only"


class Source(Enum):
    ENCODER = "encoder"
    GENERATOR = "generator"


@dataclass(frozen=True)
class ParseInput:
    text: str
    request_id: str = ""
    top_k: int = 0  # 0: server default
    policy: Policy = Policy.DEFAULT
    threshold: float | None = None


@dataclass(frozen=True)
class ParseResult:
    request_id: str
    encoded: Encoded
    routed: Routed
    top_k: int

    @property
    def source(self) -> Source:
        return Source.GENERATOR if self.routed.from_generator else Source.ENCODER
