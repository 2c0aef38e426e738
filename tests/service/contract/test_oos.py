from __future__ import annotations

import numpy as np
import pytest

from service.contract.oos import Detector, fit_reference, in_scope_scores


def unit_rows(rng: np.random.Generator, n: int, h: int) -> np.ndarray:
    x = rng.normal(size=(n, h))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mahalanobis_score_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    train = unit_rows(rng, 60, 8)
    intents = [f"i{k % 3}" for k in range(60)]
    reference = fit_reference("mahalanobis", train, intents, ["i0", "i1", "i2"])
    queries = unit_rows(rng, 5, 8)
    scores = in_scope_scores(
        "mahalanobis", reference, np.ones((5, 3)) / 3, queries, np.ones(3, bool)
    )
    direct = [
        -min((q - m) @ reference.precision @ (q - m) for m in reference.means) for q in queries
    ]
    np.testing.assert_allclose(scores, direct, rtol=1e-9)


def test_knn_score_is_the_nearest_example_of_the_best_in_scope_intent():
    rng = np.random.default_rng(1)
    train = unit_rows(rng, 20, 6)
    intents = ["b", "a"] * 10
    reference = fit_reference("knn", train, intents, ["a", "b", "oos"])
    in_scope = np.array([True, True, False])
    probabilities = np.array([[0.1, 0.3, 0.6], [0.1, 0.3, 0.6]])  # best in-scope: "b"
    scores = in_scope_scores("knn", reference, probabilities, train[:2], in_scope)
    assert scores[0] == pytest.approx(1.0, abs=1e-6)  # row 0 is a "b" example itself
    b_rows = train[0::2]  # row 1 is an "a" example: compared with the "b" examples only
    assert scores[1] == pytest.approx(float((b_rows @ train[1]).max()), abs=1e-6)


def test_trained_class_counts_whatever_the_threshold():
    in_scope = np.array([True, True, False])  # the last intent is the trained `oos` class
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.1, 0.7], [0.4, 0.35, 0.25]])
    embeddings = np.zeros((3, 4))
    off = Detector("off", None, in_scope, fit_reference("off", embeddings, [], []))
    flags, scores = off.decide(probabilities, embeddings)
    assert flags.tolist() == [False, True, False]
    assert scores.tolist() == [0.0, 0.0, 0.0]
    confidence = Detector(
        "confidence", 0.5, in_scope, fit_reference("confidence", embeddings, [], [])
    )
    flags, scores = confidence.decide(probabilities, embeddings)
    assert flags.tolist() == [False, True, True]  # 0.4 < 0.5: below the threshold
    np.testing.assert_allclose(scores, [0.7, 0.2, 0.4])
