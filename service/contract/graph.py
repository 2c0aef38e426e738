"""The exported graph's interface: the names the exporter gives its inputs and outputs and the
runtime feeds and fetches. Argmax and decoding stay outside the graph."""

from __future__ import annotations

import numpy as np

from service.contract.text import EncodedBatch

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""Every input a graph may take; an encoder without token types takes the first two."""
OUTPUTS = ("intent_logits", "slot_logits", "embedding")
"""(B, I) intent logits, (B, T, S) slot logits, (B, H) L2-normalised sentence embedding."""


def onnx_feeds(enc: EncodedBatch, input_names: list[str]) -> dict[str, np.ndarray]:
    """The graph's inputs (it may not take token_type_ids) from an encoded batch."""
    feeds = {
        "input_ids": enc.input_ids,
        "attention_mask": enc.attention_mask,
        "token_type_ids": enc.token_type_ids,
    }
    return {name: feeds[name] for name in input_names}
