"""A large-margin cosine loss on the served sentence embedding, beside cross-entropy.

Lin & Xu (ACL 2019, "Deep Unknown Intent Detection with Margin Loss") train with LMCL (CosFace):
each intent gets a learnable prototype, and an utterance's cosine to its own intent's prototype
must beat the others by `margin`. The embedding space then holds each intent in a tight cone with
empty space between the cones, which is what the in-scope-only detectors (`centroid`, `knn`)
measure: an unknown intent's utterance falls between the cones. The prototypes serve training
only; the exported graph is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class MarginLoss(nn.Module):
    """LMCL: cross-entropy over `scale * (cos(e, p_c) - margin [c = target])`."""

    def __init__(self, n_intents: int, hidden: int, scale: float, margin: float) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(n_intents, hidden) * 0.02)  # (I, H)
        self.scale, self.margin = scale, margin

    def forward(self, embedding: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """embedding (B, H) L2-normalised, targets (B,) intent ids → scalar loss."""
        cosine = embedding @ nn.functional.normalize(self.prototypes, dim=-1).T  # (B, I)
        own = nn.functional.one_hot(targets, cosine.shape[1]).to(cosine.dtype)  # (B, I)
        return nn.functional.cross_entropy(self.scale * (cosine - self.margin * own), targets)
