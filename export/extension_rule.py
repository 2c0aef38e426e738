"""Choose the extension-intent rule (`service.open_world`) at export, without out-of-scope data.

An extension intent answers an utterance when its nearest example is at least `threshold`
similar and at least as similar as the encoder's best intent's density-matched training
utterance (`service.contract.oos.density_ranks`) plus `margin` (MARGIN: density matching makes
the two comparable as they are; a positive margin chosen on the held intents below, which the
encoder saw, cost new intents a third of their answers in the runtime-intents suite). The
threshold is chosen by rehearsing what a user does: in each of DRAWS seeded draws,
HELD_OUT_SHARE of the trained intents is taken out of the model's view (their kNN reference rows
and their probabilities), each is added back from EXAMPLES dev utterances, and every threshold
of the grid is scored on the rest of dev: the held intents' utterances must get their intent,
the others must keep theirs. Of the thresholds costing the others at most MAX_OTHERS_LOSS points
in every draw, those within ACCURACY_TOLERANCE points of the best average recognition are near-
ties (the held intents are easy, see below), and the one among them answering the fewest
utterances (the highest) wins: what an extension does not answer is left to the out-of-scope
detector, which the rehearsal, without out-of-scope data, cannot score. The encoder did see the
held intents in training, so this is an easier rehearsal than a truly new intent; `python -m
benchmarks runtime-intents` measures the rule on intents the model never saw. Nothing here
depends on the out-of-scope budget.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.contract.bundle import ExtensionRule
from service.contract.oos import density_ranks, fit_reference, neighbour_similarity

if TYPE_CHECKING:
    from export.out_of_scope import GraphOutputs

EXAMPLES = 5  # per added intent, as the runtime-intents suite adds them
HELD_OUT_SHARE = 0.1
MIN_HELD_OUT, MAX_HELD_OUT = 2, 15
MAX_OTHERS_LOSS = 1.0  # points of the other intents' dev accuracy the rule may cost
ACCURACY_TOLERANCE = 1.0  # points of rehearsed accuracy given up for a stricter rule
THRESHOLDS = tuple(np.round(np.arange(0.30, 0.951, 0.025), 3))
MARGIN = 0.0  # density matching makes the two similarities comparable as they are
SEED = 13
DRAWS = 3  # seeded draws of held intents; a rule must keep the others in each
MIN_HELD_UTTERANCES = 20  # scored utterances of the held intents a rehearsal needs


@dataclass(frozen=True)
class Rehearsal:
    """One draw of held intents, scored for every rule of the grid."""

    held_accuracy: np.ndarray  # (T,) share of the held intents' utterances they answer
    others_loss: np.ndarray  # (T,) share of the others' utterances the extensions take
    answered: np.ndarray  # (T,) share of all scored utterances an extension answers


def nearest_per_intent(
    embeddings: np.ndarray, examples: np.ndarray, owners: np.ndarray, n: int
) -> np.ndarray:
    """(B, n): each utterance's similarity to each added intent's nearest example."""
    similarity = embeddings @ examples.T  # (B, M)
    return np.stack([similarity[:, owners == e].max(axis=1) for e in range(n)], axis=1)


def rehearse(
    rng: random.Random,
    held: list[str],
    dev: GraphOutputs,
    dev_gold: Sequence[str],
    train: GraphOutputs,
    train_gold: Sequence[str],
    intents: Sequence[str],
    trained_label: str | None,
) -> Rehearsal | None:
    """`held` out of the model's view (reference rows and probabilities), added back from
    EXAMPLES dev utterances each; None when too few of their utterances are left to score."""
    visible = np.array([i not in held and i != trained_label for i in intents])  # (I,)
    visible_names = {i for i, v in zip(intents, visible, strict=True) if v}
    keep = np.array([g in visible_names for g in train_gold])  # (N,)
    reference = fit_reference(
        "knn", train.embeddings[keep], [g for g, k in zip(train_gold, keep, strict=True) if k],
        list(intents),
    )  # fmt: skip
    example_rows: list[int] = []
    owners: list[int] = []
    for e, name in enumerate(held):
        example_rows += rng.sample([k for k, g in enumerate(dev_gold) if g == name], EXAMPLES)
        owners += [e] * EXAMPLES
    used = set(example_rows)
    scored = np.array([k not in used for k in range(len(dev_gold))])  # (N,)
    gold = [g for g, s in zip(dev_gold, scored, strict=True) if s]
    is_held = np.array([g in held for g in gold])  # (N',)
    if is_held.sum() < MIN_HELD_UTTERANCES:
        return None
    emb = dev.embeddings[scored]  # (N', H)
    predicted = np.where(visible, dev.probabilities[scored], -1.0).argmax(axis=1)  # (N',)
    ranks = density_ranks(reference, predicted, np.full(len(predicted), EXAMPLES))  # (N',)
    trained = neighbour_similarity(reference, predicted, emb, ranks)  # (N',)
    added = nearest_per_intent(emb, dev.embeddings[example_rows], np.array(owners), len(held))
    best, nearest = added.max(axis=1), added.argmax(axis=1)  # (N',), (N',)
    others_right = np.array(
        [not h and intents[p] == g for p, g, h in zip(predicted, gold, is_held, strict=True)]
    )  # (N',)
    held_id = np.array([held.index(g) if g in held else -1 for g in gold])  # (N',)
    thresholds = np.array(THRESHOLDS)[:, None]  # (T, 1)
    answered = (best >= thresholds) & (best >= trained + MARGIN)  # (T, N')
    return Rehearsal(
        held_accuracy=(answered & (nearest == held_id))[..., is_held].mean(axis=-1),
        others_loss=(others_right & answered)[..., ~is_held].mean(axis=-1),
        answered=answered.mean(axis=-1),
    )


def choose_extension_rule(
    dev: GraphOutputs,
    dev_gold: Sequence[str],
    train: GraphOutputs,
    train_gold: Sequence[str],
    intents: Sequence[str],
    trained_label: str | None,
) -> ExtensionRule | None:
    """The rule as rehearsed on dev over DRAWS draws of held intents (accuracy averaged, loss
    the worst draw's); None when dev is too small to rehearse it or no rule recognises a held
    intent (the engine then keeps the older default)."""
    rng = random.Random(SEED)
    counts = {i: sum(g == i for g in dev_gold) for i in intents if i != trained_label}
    eligible = sorted(i for i, n in counts.items() if n > EXAMPLES)
    n_held = min(MAX_HELD_OUT, max(MIN_HELD_OUT, round(HELD_OUT_SHARE * len(counts))))
    if len(eligible) < n_held or len(counts) - n_held < 2:
        return None
    draws = [
        rehearse(rng, sorted(rng.sample(eligible, n_held)), dev, dev_gold, train, train_gold,
                 intents, trained_label)
        for _ in range(DRAWS)
    ]  # fmt: skip
    if any(d is None for d in draws):
        return None
    accuracy = np.mean([d.held_accuracy for d in draws], axis=0)  # (T,)
    loss = np.max([d.others_loss for d in draws], axis=0)  # (T,)
    answered = np.mean([d.answered for d in draws], axis=0)  # (T,)
    allowed = 100 * loss <= MAX_OTHERS_LOSS
    if not (allowed & (accuracy > 0)).any():
        return None
    best = accuracy[allowed].max()
    # Held intents the encoder was trained on are easy: many rules recognise nearly all of
    # them. Of those within ACCURACY_TOLERANCE of the best, the one answering the fewest
    # utterances leaves most to the out-of-scope detector, which the rehearsal cannot score.
    near_best = allowed & (100 * accuracy >= 100 * best - ACCURACY_TOLERANCE)
    t = min(np.flatnonzero(near_best), key=lambda t: (answered[t], -t))
    return ExtensionRule(
        threshold=float(THRESHOLDS[t]),
        margin=MARGIN,
        compared_with="density",
        chosen_by=(
            f"dev rehearsal: {DRAWS} draws of {n_held} trained intents left out and added back "
            f"from {EXAMPLES} examples each; of the thresholds within {ACCURACY_TOLERANCE:g} "
            f"point of the most recognised at ≤ {MAX_OTHERS_LOSS:g} point lost on the others "
            "in every draw, the one answering the fewest utterances"
        ),
        dev_added_accuracy=round(100 * float(accuracy[t]), 2),
        dev_others_loss=round(100 * float(loss[t]), 2),
    )
