"""An exported graph over a list of examples, in padded batches: what export-time evaluation
(`export.onnx.run_onnx`) and the out-of-scope choice (`export.out_of_scope.graph_outputs`)
both need."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from export.data import Example
from service.contract.graph import OUTPUTS, onnx_feeds
from service.contract.text import EncodedBatch, encode_words


def graph_batches(
    sess: ort.InferenceSession,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    names: list[str],
    batch_size: int,
) -> Iterator[tuple[EncodedBatch, list[np.ndarray]]]:
    """Each batch's encoding and the graph's OUTPUTS for it: intent (B, I), slots (B, T, S),
    embedding (B, H)."""
    for i in range(0, len(examples), batch_size):
        enc = encode_words(tokenizer, [ex.words for ex in examples[i : i + batch_size]])
        yield enc, sess.run(list(OUTPUTS), onnx_feeds(enc, names))
