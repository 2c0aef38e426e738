"""Knowledge distillation (Hinton et al. 2015): a deeper trained model's logits as soft targets
for a shallower one, so the first N encoder layers learn what the full model learned on this
data (how close the near-miss intents and tags are), not the hard labels alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from export.artifacts import TOKENIZER, load_artifacts
from export.data import Example
from export.inference import run_model
from service.contract.labels import LabelSet


class TeacherError(ValueError):
    """The teacher cannot teach this student (a CLI error, not a crash)."""


@dataclass
class Teacher:
    """The teacher's logits for every training utterance, computed once before training: it is
    frozen and in eval mode, so they never change, and a forward pass per step would cost a
    third of a 6-layer training step."""

    intent: dict[str, np.ndarray]  # text → (I,)
    words: dict[str, np.ndarray]  # text → (W, S) per-word slot logits, NaN rows for words
    # without a sub-token (truncated, or characters the tokenizer drops)
    temperature: float
    weight: float  # loss = (1 - weight) * label loss + weight * soft-target loss

    def targets(self, batch: Sequence[Example], word_index: np.ndarray) -> tuple:
        """Intent logits (B, I) and the slot logits of the words the student sees, those with
        a first sub-token in `word_index` (B, T), stacked in batch then word order (N, S). A
        word the tokenizer drops can sit mid-sentence, so the words are picked, not counted."""
        intent = torch.from_numpy(np.stack([self.intent[ex.text] for ex in batch]))
        words = np.concatenate(
            [self.words[ex.text][row[row >= 0]] for ex, row in zip(batch, word_index, strict=True)]
        )
        return intent, torch.from_numpy(words)


def load_teacher(
    model_dir: Path,
    labels: LabelSet,
    tokenizer_path: Path,
    max_seq_len: int,
    train_set: Sequence[Example],
    temperature: float,
    weight: float,
) -> Teacher:
    """The trained model in `model_dir`, checked to speak the student's labels and tokens, run
    once over `train_set`."""
    artifacts = load_artifacts(model_dir)
    if artifacts.labels != labels:
        raise TeacherError(
            f"{model_dir}: its intents and slot tags differ from this training set's; "
            "distil from a model trained on the same data"
        )
    if (model_dir / TOKENIZER).read_bytes() != tokenizer_path.read_bytes():
        raise TeacherError(
            f"{model_dir / TOKENIZER}: not the student's tokenizer ({tokenizer_path}); "
            "teacher and student must share the vocabulary"
        )
    if artifacts.config["max_seq_len"] != max_seq_len:
        raise TeacherError(
            f"{model_dir}: max_seq_len {artifacts.config['max_seq_len']}, the student's "
            f"{max_seq_len}; they must keep the same words"
        )
    outputs = run_model(artifacts.model, artifacts.tokenizer, [ex.words for ex in train_set])
    return Teacher(
        intent={
            ex.text: row.astype(np.float32)
            for ex, row in zip(train_set, outputs.intent_logits, strict=True)
        },
        words={
            ex.text: rows.astype(np.float32)
            for ex, rows in zip(train_set, outputs.word_logits, strict=True)
        },
        temperature=temperature,
        weight=weight,
    )


def soft_target_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T² · KL(teacher ‖ student) of the temperature-softened distributions over the last axis,
    averaged over rows: (N, C), (N, C) → (). T² keeps the gradients' scale independent of T."""
    kl = F.kl_div(
        F.log_softmax(student / temperature, dim=-1),
        F.log_softmax(teacher / temperature, dim=-1),
        log_target=True,
        reduction="none",
    ).sum(-1)  # (N,)
    return temperature**2 * kl.mean()
