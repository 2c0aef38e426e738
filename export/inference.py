"""Batched PyTorch inference returning per-utterance intent logits and per-word slot logits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from export.data import Example
from export.model import JointModel
from export.scoring import frame_metrics
from service.contract.labels import LabelSet
from service.contract.text import CrfParams, Word, decode_word_tags, encode_words, word_scores


@dataclass(frozen=True)
class Outputs:
    intent_logits: np.ndarray  # (N, I)
    word_logits: list[np.ndarray]  # N × (W, S); NaN rows for truncated words
    crf: CrfParams | None


@torch.no_grad()
def run_model(
    model: JointModel, tokenizer: Tokenizer, words: Sequence[Sequence[Word]], batch_size: int = 64
) -> Outputs:
    model.eval()
    intent_rows: list[np.ndarray] = []
    word_rows: list[np.ndarray] = []
    for i in range(0, len(words), batch_size):
        enc = encode_words(tokenizer, words[i : i + batch_size])
        intent_logits, slot_logits = model(
            input_ids=torch.from_numpy(enc.input_ids),
            attention_mask=torch.from_numpy(enc.attention_mask),
            token_type_ids=torch.from_numpy(enc.token_type_ids),
        )  # (B, I), (B, T, S)
        intent_rows.append(intent_logits.float().numpy())
        slots = slot_logits.float().numpy()
        for b, ws in enumerate(enc.words):
            word_rows.append(word_scores(enc.word_index[b], slots[b], len(ws)))
    crf = model.crf.numpy_params() if model.crf is not None else None
    return Outputs(np.concatenate(intent_rows), word_rows, crf)


def predicted_tags(
    word_logits: np.ndarray, labels: LabelSet, crf: CrfParams | None = None
) -> list[str]:
    """Argmax (or CRF Viterbi) tag per word, decoded exactly as the service decodes."""
    return decode_word_tags(word_logits, labels.slot_tags, crf)[0]


def score(outputs: Outputs, examples: Sequence[Example], labels: LabelSet) -> dict:
    pred_intents = [labels.intents[i] for i in outputs.intent_logits.argmax(axis=-1)]
    pred_tags = [predicted_tags(w, labels, outputs.crf) for w in outputs.word_logits]
    return frame_metrics(
        [ex.intent for ex in examples],
        pred_intents,
        [ex.tags for ex in examples],
        pred_tags,
        labels.intents,
    )


def evaluate_examples(
    model: JointModel,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    labels: LabelSet,
    batch_size: int = 64,
) -> tuple[dict, Outputs]:
    outputs = run_model(model, tokenizer, [ex.words for ex in examples], batch_size)
    return score(outputs, examples, labels), outputs
