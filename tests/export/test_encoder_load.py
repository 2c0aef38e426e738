"""Loading a pretrained encoder that carries pooler weights (as all-MiniLM-L6-v2 does) logs no
load report a user cannot act on, and the encoder comes without its pooler."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import BertConfig, BertModel

from export.model import EncoderError, load_pretrained_encoder


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_checkpoint_pooler_is_dropped_without_an_unexpected_weights_report(tmp_path):
    config = BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    BertModel(config).save_pretrained(tmp_path)  # with its pooler, like the packaged MiniLM
    collect, library = Collect(), logging.getLogger("transformers")  # does not propagate
    library.addHandler(collect)
    try:
        encoder = load_pretrained_encoder(tmp_path)
    finally:
        library.removeHandler(collect)
    assert encoder.pooler is None
    assert not [m for m in collect.messages if "LOAD REPORT" in m], collect.messages


def test_keeping_the_first_layers_loads_their_weights_without_a_report(tmp_path):
    config = BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    full = BertModel(config)
    full.save_pretrained(tmp_path)
    collect, library = Collect(), logging.getLogger("transformers")
    library.addHandler(collect)
    try:
        encoder = load_pretrained_encoder(tmp_path, layers=2)
    finally:
        library.removeHandler(collect)
    assert encoder.config.num_hidden_layers == 2 and len(encoder.encoder.layer) == 2
    for kept, original in zip(encoder.encoder.layer, full.encoder.layer[:2], strict=True):
        for a, b in zip(kept.parameters(), original.parameters(), strict=True):
            assert torch.equal(a, b)
    assert not [m for m in collect.messages if "LOAD REPORT" in m], collect.messages
    with pytest.raises(EncoderError, match="has 3 layers; cannot keep 4"):
        load_pretrained_encoder(tmp_path, layers=4)
