"""Temperature scaling for the intent logits (Guo et al. 2017) and expected calibration error."""

from __future__ import annotations

import numpy as np
import torch

from service.contract.text import softmax

ECE_BINS = 15


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Weighted mean |accuracy − confidence| over equal-width confidence bins (percent)."""
    conf = probs.max(axis=-1)  # (N,)
    correct = probs.argmax(axis=-1) == labels  # (N,)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return round(100.0 * float(ece), 3)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T); examples with label −1 are ignored."""
    keep = labels >= 0
    x = torch.tensor(logits[keep], dtype=torch.float64)  # (N, I)
    y = torch.tensor(labels[keep], dtype=torch.long)  # (N,)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def calibration_report(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Fit T on these logits; ECE (percent) before and after."""
    temperature = fit_temperature(logits, labels)
    return {
        "temperature": round(temperature, 4),
        "ece_before": expected_calibration_error(softmax(logits), labels),
        "ece_after": expected_calibration_error(softmax(logits, temperature), labels),
    }
