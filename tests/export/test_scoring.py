from __future__ import annotations

import numpy as np
import pytest

from export.calibration import expected_calibration_error, fit_temperature, softmax
from export.scoring import frame_metrics


def test_frame_metrics_counts_unseen_intents_as_errors():
    gold_tags = [["B-city", "O"], ["O", "B-date"], ["O", "O"], ["B-city", "I-city"]]
    pred_tags = [["B-city", "O"], ["O", "O"], ["O", "O"], ["B-city", "I-city"]]
    m = frame_metrics(
        ["a", "a", "b", "new"], ["a", "b", "b", "a"], gold_tags, pred_tags, known_intents=["a", "b"]
    )
    assert m["intent_acc"] == 50.0
    assert m["sentence_acc"] == 50.0  # examples 1 and 3: intent and every tag right
    assert m["slot_f1"] == pytest.approx(100 * 2 * 1.0 * (2 / 3) / (1 + 2 / 3), abs=0.01)
    assert m["unseen_intents"] == ["new"]
    assert m["per_intent"]["new"] == {"n": 1, "acc": 0.0}
    assert m["worst_slot_types"][0]["slot"] == "date"


def test_slot_f1_is_span_level_conlleval():
    # An orphan I- counts as a span start (conlleval), so the prediction matches the gold span.
    m = frame_metrics(["x"], ["x"], [["B-city", "I-city"]], [["I-city", "I-city"]])
    assert m["slot_f1"] == 100.0
    m = frame_metrics(["x"], ["x"], [["B-city", "I-city"]], [["B-city", "O"]])
    assert m["slot_f1"] == 0.0


def test_fit_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 5)) * 2.0
    labels = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 3.0
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(softmax(overconfident), labels)
    after = expected_calibration_error(softmax(overconfident, temperature), labels)
    assert after < before / 2


def test_fit_temperature_ignores_unseen_labels():
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [5.0, 0.0]])
    t_all = fit_temperature(logits[:2], np.array([0, 1]))
    t_masked = fit_temperature(logits, np.array([0, 1, -1]))
    assert t_masked == pytest.approx(t_all)


def test_intent_only_data_has_no_slot_f1_and_no_warnings(recwarn):
    m = frame_metrics(["a", "b"], ["a", "a"], [["O"], ["O", "O"]], [["O"], ["O", "O"]])
    assert m["slot_f1"] is None
    assert m["worst_slot_types"] == []
    assert (m["intent_acc"], m["sentence_acc"]) == (50.0, 50.0)
    assert not recwarn.list
