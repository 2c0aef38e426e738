"""The joint model: one shared BERT-style encoder, an intent head and a slot head."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import MODEL_MAPPING, AutoConfig, AutoModel, PreTrainedModel

from export.crf import CRF

Pooling = Literal["cls", "mean"]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the non-padding token vectors: (B, T, H), (B, T) → (B, H)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def sentence_embedding(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The served sentence embedding: L2-normalised mean of the token vectors, (B, T, H) → (B, H).
    Out-of-scope detectors and extension intents compare utterances with it."""
    return nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)


class JointModel(nn.Module):
    """Encoder → intent logits from the pooled vector, slot logits from every token.

    With `crf`, the slot logits are CRF emissions; the CRF parameters live here but serve only the
    training loss and Viterbi decoding, which runs outside the exported graph.
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        n_intents: int,
        n_tags: int,
        pooling: Pooling = "cls",
        dropout: float = 0.1,
        crf: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.intent_head = nn.Linear(hidden, n_intents)
        self.slot_head = nn.Linear(hidden, n_tags)
        self.crf = CRF(n_tags) if crf else None

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Contextual token vectors (B, T, H); inputs passed by keyword (transformers 5)."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.encoder(**inputs).last_hidden_state

    def heads(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, H) → intent logits (B, I), slot logits (B, T, S)."""
        pooled = hidden[:, 0] if self.pooling == "cls" else mean_pool(hidden, attention_mask)
        intent_logits = self.intent_head(self.dropout(pooled))  # (B, I)
        slot_logits = self.slot_head(self.dropout(hidden))  # (B, T, S)
        return intent_logits, slot_logits

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.encode(input_ids, attention_mask, token_type_ids), attention_mask)


class EncoderError(ValueError):
    """The encoder cannot be built as asked (a CLI error, not a crash)."""


def load_pretrained_encoder(name_or_path: str | Path, layers: int | None = None) -> PreTrainedModel:
    """A pretrained encoder from a local folder or a Hugging Face name, without its pooler (the
    heads read the token states); with `layers`, only its first `layers` transformer layers (a
    faster encoder to fine-tune, as DistilBERT-style truncation does). Checkpoints such as
    all-MiniLM-L6-v2 carry pooler weights, and a truncated encoder leaves the upper layers'
    weights unread; both are declared as expected-unused, so transformers prints no
    "UNEXPECTED" load report a user cannot act on."""
    config = AutoConfig.from_pretrained(str(name_or_path))
    depth = config.num_hidden_layers
    if layers is not None and layers > depth:
        raise EncoderError(f"{name_or_path} has {depth} layers; cannot keep {layers}")
    unused = [r"^pooler\."] + [rf"^encoder\.layer\.{i}\." for i in range(layers or depth, depth)]
    architecture = MODEL_MAPPING[type(config)]
    without_pooler = type(
        architecture.__name__, (architecture,), {"_keys_to_ignore_on_load_unexpected": unused}
    )
    kwargs = {"num_hidden_layers": layers} if layers is not None else {}
    return without_pooler.from_pretrained(str(name_or_path), add_pooling_layer=False, **kwargs)


def encoder_from_config(
    config_dir: str | Path, attn_implementation: str | None = None
) -> PreTrainedModel:
    """An untrained encoder of the architecture saved in `config_dir` (weights loaded after).

    `attn_implementation="eager"` gives the ONNX export an attention pattern that onnxruntime's
    transformer optimizer can fuse.
    """
    return AutoModel.from_config(
        AutoConfig.from_pretrained(str(config_dir)),
        add_pooling_layer=False,
        attn_implementation=attn_implementation,
    )
