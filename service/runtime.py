"""ONNX Runtime inference over a verified model bundle: texts in, frames out. No torch.

Tokenisation, word alignment and BIO decoding come from `service.text`, the module training uses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from service.bundle import TOKENIZER, Bundle, load_bundle
from service.text import (
    EncodedBatch,
    Slot,
    decode_bio,
    decode_word_tags,
    encode_texts,
    load_tokenizer,
    softmax,
    word_scores,
)

log = logging.getLogger(__name__)

Provider = Literal["cpu", "cuda"]
GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
WARMUP_TEXT = "show me flights from boston to denver tomorrow morning"


@dataclass(frozen=True)
class IntentScore:
    label: str
    probability: float


@dataclass(frozen=True)
class Frame:
    """The encoder's answer for one utterance."""

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


@dataclass(frozen=True)
class RawOutputs:
    intent_logits: np.ndarray  # (B, I)
    slot_logits: np.ndarray  # (B, T, S)
    embedding: np.ndarray  # (B, H)


def onnx_feeds(enc: EncodedBatch, input_names: list[str]) -> dict[str, np.ndarray]:
    """The graph's inputs (it may not take token_type_ids) from an encoded batch."""
    feeds = {
        "input_ids": enc.input_ids,
        "attention_mask": enc.attention_mask,
        "token_type_ids": enc.token_type_ids,
    }
    return {name: feeds[name] for name in input_names}


def select_providers(provider: Provider) -> list[str]:
    """CUDA when asked for and available (onnxruntime-gpu + a GPU), else CPU with a warning."""
    if provider == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning("CUDA execution provider requested but not available; falling back to CPU")
    return ["CPUExecutionProvider"]


class Engine:
    """One ONNX Runtime session over one bundle variant (fp32 or int8)."""

    def __init__(
        self,
        bundle_dir: str | Path,
        variant: str = "int8",
        provider: Provider = "cpu",
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        graph_optimization: str = "all",
        warmup: bool = True,
        allow_spinning: bool = True,
    ) -> None:
        bundle_dir = Path(bundle_dir)
        self.bundle: Bundle = load_bundle(bundle_dir)
        self.variant = variant
        self.tokenizer = load_tokenizer(bundle_dir / TOKENIZER, self.bundle.max_seq_len)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.graph_optimization_level = GRAPH_OPTIMIZATION[graph_optimization]
        # Idle ORT threads spin-wait by default: lower latency, but they burn the cores that
        # anything else in the process (a gRPC loop, another runtime) needs.
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if allow_spinning else "0"
        )
        self.session = ort.InferenceSession(
            str(self.bundle.model_file(variant)), options, providers=select_providers(provider)
        )
        self.providers = self.session.get_providers()
        if warmup:
            self.warm_up()

    def warm_up(self, batches: int = 1, batch_size: int = 2) -> None:
        """Run a few full batches so the first real request does not pay for lazy set-up."""
        for _ in range(batches):
            self.parse([WARMUP_TEXT] * batch_size)

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        return encode_texts(self.tokenizer, texts)

    def infer(self, enc: EncodedBatch) -> RawOutputs:
        intent, slots, embedding = self.session.run(
            ["intent_logits", "slot_logits", "embedding"], onnx_feeds(enc, self.bundle.input_names)
        )
        return RawOutputs(intent, slots, embedding)

    def decode(
        self, texts: Sequence[str], enc: EncodedBatch, raw: RawOutputs, top_k: int = 3
    ) -> list[Frame]:
        """Calibrated intent probabilities, top-k, and BIO slots with character offsets."""
        probs = softmax(raw.intent_logits.astype(np.float64), self.bundle.temperature)  # (B, I)
        frames = []
        for b, text in enumerate(texts):
            order = np.argsort(-probs[b])[: max(1, top_k)]
            top = [IntentScore(self.bundle.intents[i], float(probs[b, i])) for i in order]
            words = enc.words[b]
            logits = word_scores(enc.word_index[b], raw.slot_logits[b], len(words))  # (W, S)
            tags, confidences = decode_word_tags(logits, self.bundle.slot_tags, self.bundle.crf)
            frames.append(
                Frame(
                    text=text,
                    intent=top[0].label,
                    confidence=top[0].probability,
                    top_intents=top,
                    probabilities=probs[b],
                    slots=decode_bio(text, words, tags, confidences),
                    word_tags=tags,
                    min_tag_confidence=min(confidences, default=1.0),
                    embedding=raw.embedding[b],
                    truncated_words=enc.truncated_words[b],
                )
            )
        return frames

    def parse(self, texts: Sequence[str], top_k: int = 3) -> list[Frame]:
        enc = self.encode(texts)
        return self.decode(texts, enc, self.infer(enc), top_k)
