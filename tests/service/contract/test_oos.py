from __future__ import annotations

import numpy as np
import pytest

from service.contract.oos import (
    Detector,
    density_ranks,
    fit_reference,
    in_scope_scores,
    neighbour_similarity,
)


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


def test_neighbour_similarity_is_the_ranked_training_utterance_of_the_intent():
    rng = np.random.default_rng(2)
    train = unit_rows(rng, 30, 6)
    intents = ["a"] * 20 + ["b"] * 10
    reference = fit_reference("knn", train, intents, ["a", "b", "c"])
    query = unit_rows(rng, 1, 6)
    a_sorted = np.sort(train[:20] @ query[0])[::-1]
    for rank in (1, 4, 20, 99):  # past the intent's rows: its farthest one
        got = neighbour_similarity(reference, np.array([0]), query, np.array([rank]))
        assert got[0] == pytest.approx(float(a_sorted[min(rank, 20) - 1]), abs=1e-6)
    assert neighbour_similarity(reference, np.array([2]), query, np.array([1]))[0] == -1.0


def test_density_rank_matches_the_training_rows_to_the_examples():
    train = np.eye(6)[np.arange(30) % 6]
    reference = fit_reference("knn", train, ["a"] * 20 + ["b"] * 10, ["a", "b", "c"])
    ranks = density_ranks(reference, np.array([0, 0, 1, 1, 2]), np.array([5, 40, 5, 3, 5]))
    assert ranks.tolist() == [4, 1, 2, 3, 1]  # 20/5, at least 1, 10/5, round(10/3), no rows


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
