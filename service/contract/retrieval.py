"""The bundle's retrieval index: training utterances, their frames and sentence embeddings, so the
generator's prompt can show the k training examples nearest to an utterance.

Layout inside a bundle: `index/embeddings.npy` (N, H) float16, L2-normalised rows, and
`index/examples.jsonl` (one `{"text", "intent", "slots": [{"name", "value"}]}` per row).
Written by the exporter, read by the server; both through this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

INDEX_DIR = "index"
EMBEDDINGS = f"{INDEX_DIR}/embeddings.npy"
EXAMPLES = f"{INDEX_DIR}/examples.jsonl"


@dataclass(frozen=True)
class IndexEntry:
    text: str
    intent: str
    slots: list[dict[str, str]]  # [{"name": ..., "value": ...}]


@dataclass(frozen=True)
class RetrievalIndex:
    embeddings: np.ndarray  # (N, H) float32, L2-normalised
    examples: list[IndexEntry]

    def nearest(self, query: np.ndarray, k: int, exclude: str | None = None) -> list[IndexEntry]:
        """The k examples with the highest cosine similarity to `query` (H,), best first; none
        of intent `exclude`."""
        if k <= 0 or not self.examples:
            return []
        scores = self.embeddings @ query.astype(np.float32)  # (N,)
        if exclude is not None and exclude in self.rows_by_intent:
            scores[self.rows_by_intent[exclude]] = -np.inf
            k = min(k, len(scores) - len(self.rows_by_intent[exclude]))
            if k <= 0:
                return []
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        return [self.examples[i] for i in top[np.argsort(-scores[top])]]

    @cached_property
    def rows_by_intent(self) -> dict[str, np.ndarray]:
        rows: dict[str, list[int]] = {}
        for i, ex in enumerate(self.examples):
            rows.setdefault(ex.intent, []).append(i)
        return {intent: np.array(r) for intent, r in rows.items()}

    def nearest_of(self, query: np.ndarray, intent: str, k: int) -> list[str]:
        """The texts of `intent`'s k examples most similar to `query` (H,), best first."""
        rows = self.rows_by_intent.get(intent, np.zeros(0, int))  # (R,)
        scores = self.embeddings[rows] @ query.astype(np.float32)  # (R,)
        return [self.examples[rows[i]].text for i in np.argsort(-scores)[:k]]


def write_index(bundle_dir: Path, embeddings: np.ndarray, examples: list[IndexEntry]) -> None:
    if len(embeddings) != len(examples):
        raise ValueError(f"{len(embeddings)} embeddings for {len(examples)} examples")
    (bundle_dir / INDEX_DIR).mkdir(parents=True, exist_ok=True)
    np.save(bundle_dir / EMBEDDINGS, embeddings.astype(np.float16), allow_pickle=False)
    with (bundle_dir / EXAMPLES).open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps({"text": ex.text, "intent": ex.intent, "slots": ex.slots}) + "\n")


def load_index(bundle_dir: Path) -> RetrievalIndex | None:
    """The index of a bundle, or None for a bundle exported without one."""
    if not (bundle_dir / EMBEDDINGS).is_file():
        return None
    embeddings = np.load(bundle_dir / EMBEDDINGS, allow_pickle=False).astype(np.float32)
    lines = (bundle_dir / EXAMPLES).read_text(encoding="utf-8").splitlines()
    examples = [IndexEntry(**json.loads(line)) for line in lines]
    if len(examples) != len(embeddings):
        raise ValueError(
            f"{bundle_dir / EXAMPLES}: {len(examples)} examples for {len(embeddings)} embeddings"
        )
    return RetrievalIndex(embeddings, examples)
