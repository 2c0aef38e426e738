"""Out-of-scope detection: decide that no intent of the schema covers an utterance.

Every method gives each utterance an in-scope score (higher: more in scope) and calls it
out-of-scope below a threshold chosen on dev at export time (`export.out_of_scope`); a bundle
trained with an out-of-scope class (CLINC150's `oos`) also calls it out-of-scope whenever that
class wins the argmax.

- `oos_class`: the trained class alone (no threshold).
- `confidence`: the calibrated probability of the best in-scope intent.
- `knn`: cosine similarity of the sentence embedding to the nearest training utterance of the
  encoder's best in-scope intent (class-conditional: on CLINC150 dev it scored the same as the
  nearest utterance of any intent, and it reads ~100 rows instead of 15,000, which at batch 1
  cost ~1.2 ms of memory traffic).
- `mahalanobis`: minus the Mahalanobis distance to the nearest in-scope intent mean (one shared
  covariance), the standard strong baseline for embedding-based detection.

The exporter writes the chosen method's reference data under `oos/` in the bundle (and the kNN
data always: extension intents are matched against it); the server reads it here. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

OOS_DIR = "oos"
KNN_EMBEDDINGS = f"{OOS_DIR}/knn_embeddings.npy"
KNN_INTENTS = f"{OOS_DIR}/knn_intents.npy"
MAHALANOBIS_MEANS = f"{OOS_DIR}/mahalanobis_means.npy"
MAHALANOBIS_PRECISION = f"{OOS_DIR}/mahalanobis_precision.npy"
Method = Literal["off", "oos_class", "confidence", "knn", "mahalanobis"]
METHODS: tuple[Method, ...] = ("oos_class", "confidence", "knn", "mahalanobis")
"""The detectors in order of simplicity (ties on dev go to the simpler one)."""
COVARIANCE_RIDGE = 1e-3
"""Added to the covariance diagonal so its inverse exists with 384 dimensions and ~100 examples
per intent."""


@dataclass(frozen=True)
class Reference:
    """What a method compares an utterance to, from in-scope training utterances only."""

    knn_embeddings: np.ndarray | None = None  # (N, H) L2-normalised, grouped by intent
    knn_intents: np.ndarray | None = None  # (N,) bundle intent index of each row, ascending
    means: np.ndarray | None = None  # (C, H) per-intent mean embedding
    precision: np.ndarray | None = None  # (H, H) inverse shared covariance

    @cached_property
    def knn_rows(self) -> dict[int, slice]:
        """Bundle intent index → its rows of `knn_embeddings`."""
        ids, starts = np.unique(self.knn_intents, return_index=True)
        ends = [*starts[1:], len(self.knn_intents)]
        return {int(i): slice(int(a), int(b)) for i, a, b in zip(ids, starts, ends, strict=True)}

    @cached_property
    def mean_terms(self) -> np.ndarray:
        """(C,) mᵀPm of every mean, computed once rather than per batch."""
        return ((self.means @ self.precision) * self.means).sum(axis=1)


def fit_reference(
    method: Method, embeddings: np.ndarray, intents: list[str], labels: list[str]
) -> Reference:
    """The reference data of `method` from in-scope training embeddings (N, H), their intents
    and the bundle's intent labels (the order of the probabilities)."""
    if method == "knn":
        ids = np.array([labels.index(i) for i in intents], dtype=np.int32)  # (N,)
        order = np.argsort(ids, kind="stable")
        return Reference(
            knn_embeddings=embeddings[order].astype(np.float32), knn_intents=ids[order]
        )
    if method == "mahalanobis":
        names = sorted(set(intents))
        ids = np.array([names.index(i) for i in intents])  # (N,)
        x = embeddings.astype(np.float64)
        means = np.stack([x[ids == c].mean(axis=0) for c in range(len(names))])  # (C, H)
        centred = x - means[ids]  # (N, H)
        covariance = centred.T @ centred / len(x) + COVARIANCE_RIDGE * np.eye(x.shape[1])
        return Reference(means=means, precision=np.linalg.inv(covariance))
    return Reference()


def in_scope_scores(
    method: Method,
    reference: Reference,
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    in_scope: np.ndarray,
) -> np.ndarray:
    """(B,) in-scope scores from calibrated probabilities (B, I), embeddings (B, H) and a mask
    (I,) of the in-scope intents."""
    if method in ("confidence", "oos_class"):
        return probabilities[:, in_scope].max(axis=1)
    if method == "knn":
        best = np.where(in_scope, probabilities, -1.0).argmax(axis=1)  # (B,) best in-scope
        return neighbour_similarity(reference, best, embeddings, np.ones(len(best), int))
    if method == "mahalanobis":
        x = embeddings.astype(np.float64)  # (B, H)
        projected = x @ reference.precision  # (B, H)
        # (x - m)ᵀ P (x - m) = xᵀPx - 2 mᵀPx + mᵀPm, for every mean m at once: (B, C)
        distance = (
            (projected * x).sum(axis=1, keepdims=True)
            - 2 * projected @ reference.means.T
            + reference.mean_terms
        )
        return -distance.min(axis=1)
    return np.zeros(len(probabilities))  # off


def neighbour_similarity(
    reference: Reference, intents: np.ndarray, embeddings: np.ndarray, ranks: np.ndarray
) -> np.ndarray:
    """(B,) each utterance's similarity to the `ranks[b]`-th nearest (1: the nearest) training
    utterance of `intents[b]`, clipped to the rows it has; -1 for an intent without rows."""
    scores = np.full(len(embeddings), -1.0)
    for b, intent in enumerate(intents):
        rows = reference.knn_rows.get(int(intent))
        if rows is None:
            continue
        similarity = reference.knn_embeddings[rows] @ embeddings[b].astype(np.float32)  # (n_i,)
        rank = min(int(ranks[b]), len(similarity))
        scores[b] = np.partition(similarity, len(similarity) - rank)[len(similarity) - rank]
    return scores


def density_ranks(
    reference: Reference, intents: np.ndarray, example_counts: np.ndarray
) -> np.ndarray:
    """(B,) the rank of the training utterance of `intents[b]` that is as near, in
    expectation, as the nearest of `example_counts[b]` examples: an intent trained on n
    utterances compared through its (n / m)-th nearest with one known from m examples, so the
    many-example side does not win by numbers alone."""
    rows = reference.knn_rows
    sizes = np.array([rows[i].stop - rows[i].start if i in rows else 0 for i in intents.tolist()])
    return np.maximum(1, np.rint(sizes / np.maximum(example_counts, 1))).astype(int)


@dataclass(frozen=True)
class Detector:
    """A bundle's out-of-scope rule, ready to run on a batch. A trained out-of-scope class
    counts whatever the method ("off" included: it is the model's own answer); `threshold` is
    None for "off" and "oos_class"."""

    method: Method
    threshold: float | None
    in_scope: np.ndarray  # (I,) bool: False for the trained out-of-scope class, if any
    reference: Reference

    def decide(
        self, probabilities: np.ndarray, embeddings: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B,) out-of-scope flags and (B,) in-scope scores."""
        scores = in_scope_scores(
            self.method, self.reference, probabilities, embeddings, self.in_scope
        )
        return self.flags(probabilities, scores), scores

    def flags(self, probabilities: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(B,) out-of-scope flags from this method's (B,) in-scope scores."""
        flags = ~self.in_scope[probabilities.argmax(axis=1)]  # the trained class won
        if self.threshold is not None:
            flags |= scores < self.threshold
        return flags


def write_reference(bundle_dir: Path, reference: Reference) -> None:
    if reference.knn_embeddings is None and reference.means is None:
        return
    (bundle_dir / OOS_DIR).mkdir(parents=True, exist_ok=True)
    if reference.knn_embeddings is not None:
        np.save(bundle_dir / KNN_EMBEDDINGS, reference.knn_embeddings.astype(np.float16))
        np.save(bundle_dir / KNN_INTENTS, reference.knn_intents)
    if reference.means is not None:
        np.save(bundle_dir / MAHALANOBIS_MEANS, reference.means)
        np.save(bundle_dir / MAHALANOBIS_PRECISION, reference.precision)


def read_reference(bundle_dir: Path, method: Method) -> Reference:
    if method == "knn":
        embeddings = np.load(bundle_dir / KNN_EMBEDDINGS, allow_pickle=False)
        intents = np.load(bundle_dir / KNN_INTENTS, allow_pickle=False)
        return Reference(knn_embeddings=embeddings.astype(np.float32), knn_intents=intents)
    if method == "mahalanobis":
        return Reference(
            means=np.load(bundle_dir / MAHALANOBIS_MEANS, allow_pickle=False),
            precision=np.load(bundle_dir / MAHALANOBIS_PRECISION, allow_pickle=False),
        )
    return Reference()
