from __future__ import annotations

import numpy as np

from export.extension_rule import DRAWS, MAX_OTHERS_LOSS, choose_extension_rule
from export.out_of_scope import GraphOutputs


def clustered(rng: np.random.Generator, centres: np.ndarray, owner: np.ndarray) -> np.ndarray:
    x = centres[owner] + 0.1 * rng.normal(size=(len(owner), centres.shape[1]))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def outputs(rng: np.random.Generator, centres: np.ndarray, owner: np.ndarray) -> GraphOutputs:
    probabilities = np.full((len(owner), len(centres)), 0.1 / len(centres))
    probabilities[np.arange(len(owner)), owner] += 0.9  # (N, I) the encoder gets it right
    return GraphOutputs(probabilities, clustered(rng, centres, owner))


def test_rehearsal_chooses_a_density_matched_rule_that_keeps_the_others():
    rng = np.random.default_rng(0)
    intents = [f"i{k}" for k in range(30)]
    centres = np.eye(32)[:30]  # (I, H) well apart
    train_owner, dev_owner = np.repeat(np.arange(30), 40), np.repeat(np.arange(30), 12)
    rule = choose_extension_rule(
        outputs(rng, centres, dev_owner),
        [intents[k] for k in dev_owner],
        outputs(rng, centres, train_owner),
        [intents[k] for k in train_owner],
        intents,
        None,
    )
    assert rule is not None and rule.compared_with == "density"
    assert rule.dev_others_loss <= MAX_OTHERS_LOSS and rule.dev_added_accuracy > 50
    assert f"{DRAWS} draws" in rule.chosen_by


def test_no_rule_when_dev_is_too_small_to_rehearse():
    rng = np.random.default_rng(1)
    intents = ["a", "b", "c"]
    centres = np.eye(4)[:3]
    owner = np.repeat(np.arange(3), 4)  # 4 dev utterances per intent: fewer than the examples
    out = outputs(rng, centres, owner)
    gold = [intents[k] for k in owner]
    assert choose_extension_rule(out, gold, out, gold, intents, None) is None
