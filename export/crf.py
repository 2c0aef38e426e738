"""Linear-chain CRF over word-level slot emissions (training loss only; decoding is
`service.contract.text.viterbi`, outside the exported graph)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from service.contract.text import CrfParams


class CRF(nn.Module):
    def __init__(self, n_tags: int) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.zeros(n_tags))  # (S,)
        self.end = nn.Parameter(torch.zeros(n_tags))  # (S,)
        self.transitions = nn.Parameter(torch.zeros(n_tags, n_tags))  # (S_from, S_to)

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per word: emissions (B, W, S), tags (B, W), mask (B, W).

        Every sequence has its first word unmasked and masked words only at the end.
        """
        mask_f = mask.to(emissions.dtype)  # (B, W)
        emitted = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # (B, W)
        gold = self.start[tags[:, 0]] + (emitted * mask_f).sum(1)  # (B,)
        gold = gold + (self.transitions[tags[:, :-1], tags[:, 1:]] * mask_f[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)  # (B,)
        gold = gold + self.end[last]
        alpha = self.start + emissions[:, 0]  # (B, S)
        for i in range(1, emissions.shape[1]):
            step = alpha.unsqueeze(2) + self.transitions + emissions[:, i].unsqueeze(1)  # (B,S,S)
            alpha = torch.where(mask[:, i : i + 1], torch.logsumexp(step, dim=1), alpha)
        log_z = torch.logsumexp(alpha + self.end, dim=1)  # (B,)
        return (log_z - gold).sum() / mask_f.sum()

    def numpy_params(self) -> CrfParams:
        """(start, end, transitions) as float64 arrays for `service.contract.text.viterbi`."""
        return tuple(p.detach().double().numpy() for p in (self.start, self.end, self.transitions))


def gather_words(
    slot_logits: torch.Tensor, word_index: np.ndarray, word_tag_ids: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First-sub-token emissions per word: (B, T, S) → emissions (B, W, S), tags, mask (B, W)."""
    batch = slot_logits.shape[0]
    positions = [np.nonzero(row >= 0)[0] for row in word_index]
    width = max(len(p) for p in positions)
    index = torch.zeros(batch, width, dtype=torch.long)
    tags = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.bool)
    for b, pos in enumerate(positions):
        index[b, : len(pos)] = torch.from_numpy(pos)
        tags[b, : len(pos)] = torch.tensor([word_tag_ids[b][w] for w in word_index[b, pos]])
        mask[b, : len(pos)] = True
    emissions = slot_logits.gather(
        1, index.unsqueeze(-1).expand(-1, -1, slot_logits.shape[-1])
    )  # (B, W, S)
    return emissions, tags, mask
