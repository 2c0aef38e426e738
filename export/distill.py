"""Knowledge distillation (Hinton et al. 2015): a deeper trained model's logits as soft targets
for a shallower one, so the first N encoder layers learn what the full model learned on this
data (how close the near-miss intents and tags are), not the hard labels alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from export.artifacts import TOKENIZER, load_artifacts
from export.model import JointModel
from service.contract.labels import LabelSet


class TeacherError(ValueError):
    """The teacher cannot teach this student (a CLI error, not a crash)."""


@dataclass
class Teacher:
    model: JointModel  # eval mode, frozen
    temperature: float
    weight: float  # loss = (1 - weight) * label loss + weight * soft-target loss


def load_teacher(
    model_dir: Path, labels: LabelSet, tokenizer_path: Path, temperature: float, weight: float
) -> Teacher:
    """The trained model in `model_dir`, checked to speak the student's labels and tokens."""
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
    artifacts.model.requires_grad_(False)
    return Teacher(artifacts.model, temperature, weight)


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
