from __future__ import annotations

import json

import numpy as np
import pytest

from export.onnx import build_bundle
from export.out_of_scope import (
    OPEN_WORLD_METHOD,
    GraphOutputs,
    budget_threshold,
    choose,
    oos_metrics,
)
from service.contract.bundle import BundleError, load_bundle
from service.contract.oos import KNN_EMBEDDINGS, MAHALANOBIS_MEANS, Detector
from service.runtime import Engine
from service.settings import EngineSettings, OpenWorldSettings


def test_budget_threshold_flags_at_most_the_budget_of_right_answers():
    scores = np.array([0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.95, 0.7, 0.6, 0.4])
    correct = np.ones(10, dtype=bool)
    assert budget_threshold(scores, correct, 10, 0.0) == 0.1  # nothing below the lowest
    threshold = budget_threshold(scores, correct, 10, 20.0)
    assert threshold == 0.3 and (scores < threshold).sum() == 2


def test_oos_metrics():
    flags = np.array([True, False, True, False, True])
    gold_oos = np.array([True, True, False, False, False])
    m = oos_metrics(flags, ["x", "x", "a", "b", "c"], gold_oos, ["oos", "oos", "a", "b", "z"])
    # in scope: a flagged (lost), b right, c wrong and flagged
    assert m == {
        "in_scope_accuracy": 33.33,
        "oos_recall": 50.0,
        "oos_precision": 33.33,
        "oos_f1": 40.0,
    }
    closed = oos_metrics(np.zeros(2, bool), ["a", "b"], np.zeros(2, bool), ["a", "c"])
    assert closed["oos_recall"] is None and closed["in_scope_accuracy"] == 50.0


def synthetic(rng: np.random.Generator, n: int, oos: int) -> tuple[GraphOutputs, list[str]]:
    """Two intents with distinct embedding directions; out-of-scope rows point elsewhere but get
    a confident in-scope answer (what the embedding methods are for)."""
    centres = np.eye(4)[:3]  # a, b, and the out-of-scope direction
    ids = [k % 2 for k in range(n)] + [2] * oos
    emb = centres[ids] + 0.3 * rng.normal(size=(len(ids), 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    probs = np.array([[0.9, 0.1] if i == 0 else [0.1, 0.9] if i == 1 else [0.9, 0.1] for i in ids])
    return GraphOutputs(probs, emb), [["a", "b", "oos"][i] for i in ids]


def test_choose_picks_the_best_dev_recall_or_stays_off_without_oos_examples():
    rng = np.random.default_rng(0)
    train, train_gold = synthetic(rng, 100, 0)
    dev, dev_gold = synthetic(rng, 100, 20)
    record, _ = choose(dev, dev_gold, train, train_gold, ["a", "b"], "oos", 1.0, None)
    assert record.trained_label is None
    assert record.method in ("knn", "mahalanobis")  # confidence cannot tell these apart
    assert record.dev[record.method].oos_recall > record.dev["confidence"].oos_recall
    assert record.threshold == record.dev[record.method].threshold
    closed, _ = choose(train, train_gold, train, train_gold, ["a", "b"], "oos", 1.0, None)
    assert closed.method == "off" and closed.threshold is None
    assert "--open-world" in closed.chosen_by  # the way to turn it on is named


def test_open_world_ships_the_in_scope_only_detector_at_its_false_rejection_budget():
    rng = np.random.default_rng(0)
    train, train_gold = synthetic(rng, 200, 0)
    dev, dev_gold = synthetic(rng, 200, 0)  # no out-of-scope utterance anywhere
    record, references = choose(dev, dev_gold, train, train_gold, ["a", "b"], "oos", 1.0, None, 5.0)
    assert record.method == OPEN_WORLD_METHOD and record.threshold is not None
    assert record.in_scope_budget == 5.0 and "--open-world" in record.chosen_by
    flagged = 100 - record.dev[record.method].in_scope_accuracy
    assert 0 < flagged <= 5.0  # the budget bounds the dev false rejections
    unknown, _ = synthetic(rng, 0, 50)  # an intent it never saw, answered confidently
    detector = Detector(
        record.method, record.threshold, np.ones(2, bool), references[record.method]
    )
    flags, _ = detector.decide(unknown.probabilities, unknown.embeddings)
    assert flags.mean() > 0.9
    named, _ = choose(train, train_gold, train, train_gold, ["a", "b"], "oos", 1.0, "knn")
    assert named.method == "knn" and named.threshold is not None


def test_bundle_carries_the_detector_the_engine_runs(tiny_clinc_bundle):
    config = json.loads((tiny_clinc_bundle / "config.json").read_text())
    record = config["out_of_scope"]
    assert record["trained_label"] == "oos"
    assert set(record["dev"]) == {"oos_class", "confidence", "knn", "mahalanobis"}
    engine = Engine(tiny_clinc_bundle, settings=EngineSettings(intra_op_threads=1))
    assert engine.open_world.detector.method == record["method"]
    assert engine.open_world.detector.threshold == record["threshold"]
    assert (
        "oos" not in engine.open_world.answer_names
        and "out_of_scope" in engine.open_world.answer_names
    )
    off = Engine(
        tiny_clinc_bundle,
        settings=EngineSettings(intra_op_threads=1),
        open_world=OpenWorldSettings(out_of_scope_detection="off"),
    )
    assert off.open_world.detector.threshold is None


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_named_method_writes_checksummed_reference_data(tiny_clinc_model, tmp_path, method):
    out = tmp_path / "bundle"
    config = build_bundle(tiny_clinc_model, out, max_int8_drop=100.0, oos={"method": method})
    assert config.out_of_scope.method == method
    assert config.out_of_scope.chosen_by == "named at export"
    engine = Engine(out, settings=EngineSettings(intra_op_threads=1))
    assert (engine.open_world.detector.method, engine.open_world.detector.threshold) == (
        method,
        config.out_of_scope.threshold,
    )
    frames = engine.parse(["how do you say hello in french", "what is the meaning of life"])
    assert all(f.in_scope_score != 0.0 for f in frames)
    reference = out / {"knn": KNN_EMBEDDINGS, "mahalanobis": MAHALANOBIS_MEANS}[method]
    reference.write_bytes(reference.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BundleError, match=reference.name):
        load_bundle(out)
