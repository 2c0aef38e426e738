"""Choose the extension-intent rule (`service.open_world`) at export, without out-of-scope data.

An extension intent answers an utterance when its nearest example is at least `threshold`
similar and at least as similar as the nearest training utterance of the encoder's best intent
plus `margin`. Both are chosen by rehearsing what a user does: a seeded HELD_OUT_SHARE of the
trained intents is taken out of the model's view (their kNN reference rows and their
probabilities), each is added back from EXAMPLES dev utterances, and the rule is scored on the
rest of dev: the held intents' utterances must get their intent, the others must keep theirs.
The rule recognising most held utterances while costing the others at most MAX_OTHERS_LOSS points
wins (ties: the stricter rule). The encoder did see the held intents in training, so this is an
easier rehearsal than a truly new intent; the open-world suite measures the rule on intents the
model never saw. Nothing here depends on the out-of-scope budget.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from service.contract.bundle import ExtensionRule
from service.contract.oos import fit_reference, in_scope_scores

if TYPE_CHECKING:
    from export.out_of_scope import GraphOutputs

EXAMPLES = 5  # per added intent, as the runtime-intents suite adds them
HELD_OUT_SHARE = 0.1
MIN_HELD_OUT, MAX_HELD_OUT = 2, 15
MAX_OTHERS_LOSS = 1.0  # points of the other intents' dev accuracy the rule may cost
THRESHOLDS = tuple(np.round(np.arange(0.30, 0.951, 0.025), 3))
MARGINS = tuple(np.round(np.arange(-0.3, 0.101, 0.025), 3))
SEED = 13
MIN_HELD_UTTERANCES = 20  # scored utterances of the held intents a rehearsal needs


def nearest_per_intent(
    embeddings: np.ndarray, examples: np.ndarray, owners: np.ndarray, n: int
) -> np.ndarray:
    """(B, n): each utterance's similarity to each added intent's nearest example."""
    similarity = embeddings @ examples.T  # (B, M)
    return np.stack([similarity[:, owners == e].max(axis=1) for e in range(n)], axis=1)


def choose_extension_rule(
    dev: GraphOutputs,
    dev_gold: Sequence[str],
    train: GraphOutputs,
    train_gold: Sequence[str],
    intents: Sequence[str],
    trained_label: str | None,
) -> ExtensionRule | None:
    """The rule as rehearsed on dev; None when dev is too small to rehearse it or no rule
    recognises a held intent (the engine then keeps the older default)."""
    rng = random.Random(SEED)
    counts = {i: sum(g == i for g in dev_gold) for i in intents if i != trained_label}
    eligible = sorted(i for i, n in counts.items() if n > EXAMPLES)
    n_held = min(MAX_HELD_OUT, max(MIN_HELD_OUT, round(HELD_OUT_SHARE * len(counts))))
    if len(eligible) < n_held or len(counts) - n_held < 2:
        return None
    held = sorted(rng.sample(eligible, n_held))
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
        rows = [k for k, g in enumerate(dev_gold) if g == name]
        chosen = rng.sample(rows, EXAMPLES)
        example_rows += chosen
        owners += [e] * EXAMPLES
    used = set(example_rows)
    scored = np.array([k not in used for k in range(len(dev_gold))])  # (N,)
    gold = [g for g, s in zip(dev_gold, scored, strict=True) if s]
    emb = dev.embeddings[scored]  # (N', H)
    probs = dev.probabilities[scored]  # (N', I)
    trained = in_scope_scores("knn", reference, probs, emb, visible)  # (N',)
    added = nearest_per_intent(emb, dev.embeddings[example_rows], np.array(owners), n_held)
    best, nearest = added.max(axis=1), added.argmax(axis=1)  # (N',), (N',)
    predicted = np.where(visible, probs, -1.0).argmax(axis=1)  # (N',)
    is_held = np.array([g in held for g in gold])
    if is_held.sum() < MIN_HELD_UTTERANCES:
        return None
    others_right = np.array(
        [not h and intents[p] == g for p, g, h in zip(predicted, gold, is_held, strict=True)]
    )
    held_id = np.array([held.index(g) if g in held else -1 for g in gold])
    base = others_right[~is_held].mean()
    tried = []
    for threshold in THRESHOLDS:
        for margin in MARGINS:
            answered = (best >= threshold) & (best >= trained + margin)  # (N',)
            held_accuracy = (answered & (nearest == held_id))[is_held].mean()
            others_loss = base - (others_right & ~answered)[~is_held].mean()
            tried.append((float(held_accuracy), float(others_loss), threshold, margin))
    allowed = [t for t in tried if 100 * t[1] <= MAX_OTHERS_LOSS]
    accuracy, loss, threshold, margin = max(allowed, key=lambda t: (t[0], t[2], t[3]))
    if accuracy == 0:
        return None
    return ExtensionRule(
        threshold=float(threshold),
        margin=float(margin),
        chosen_by=(
            f"dev rehearsal: {n_held} trained intents left out and added back from {EXAMPLES} "
            f"examples each; most of them recognised at ≤ {MAX_OTHERS_LOSS:g} point lost on the "
            "others"
        ),
        dev_added_accuracy=round(100 * accuracy, 2),
        dev_others_loss=round(100 * loss, 2),
    )
