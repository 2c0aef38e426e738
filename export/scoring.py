"""Frame metrics: intent accuracy, span-level slot F1 (seqeval, conlleval-compatible), sentence
accuracy, per-intent accuracy and the worst slot types. Percentages 0–100.

An intent-only dataset (no slot spans in gold or prediction, e.g. CLINC150) has no slot F1: it is
None, not a 0 that reads as a failure, and seqeval is not asked for an undefined score."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from seqeval.metrics import classification_report, f1_score

from service.contract.text import OUTSIDE_TAG

WORST_SLOT_TYPES = 10


def pct(x: float) -> float:
    return round(100.0 * x, 2)


def pct_text(x: float | None) -> str:
    """A percentage for tables and logs; "n/a" for a metric the dataset does not have."""
    return "n/a" if x is None else f"{x:.2f}"


def has_spans(tag_lists: Sequence[Sequence[str]]) -> bool:
    return any(tag != OUTSIDE_TAG for tags in tag_lists for tag in tags)


def frame_metrics(
    gold_intents: Sequence[str],
    pred_intents: Sequence[str],
    gold_tags: Sequence[Sequence[str]],
    pred_tags: Sequence[Sequence[str]],
    known_intents: Sequence[str] | None = None,
) -> dict:
    """Score predicted frames against gold ones.

    Gold intents outside `known_intents` (unseen in training) can never be predicted and count as
    errors; they are listed under `unseen_intents`.
    """
    n = len(gold_intents)
    if not n == len(pred_intents) == len(gold_tags) == len(pred_tags):
        raise ValueError("gold and predicted sequences differ in length")
    intent_ok = [g == p for g, p in zip(gold_intents, pred_intents, strict=True)]
    tags_ok = [list(g) == list(p) for g, p in zip(gold_tags, pred_tags, strict=True)]
    per_intent: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for gold, ok in zip(gold_intents, intent_ok, strict=True):
        per_intent[gold][0] += 1
        per_intent[gold][1] += ok
    gold_lists, pred_lists = [list(t) for t in gold_tags], [list(t) for t in pred_tags]
    with_slots = has_spans(gold_lists) or has_spans(pred_lists)
    report = (
        classification_report(gold_lists, pred_lists, output_dict=True, zero_division=0)
        if with_slots
        else {}
    )
    slot_types = [
        {
            "slot": name,
            "f1": pct(v["f1-score"]),
            "precision": pct(v["precision"]),
            "recall": pct(v["recall"]),
            "support": int(v["support"]),
        }
        for name, v in report.items()
        if not name.endswith(" avg")
    ]
    slot_types.sort(key=lambda r: (r["f1"], -r["support"]))
    known = set(known_intents) if known_intents is not None else set(pred_intents)
    return {
        "n": n,
        "intent_acc": pct(sum(intent_ok) / n),
        "slot_f1": pct(float(f1_score(gold_lists, pred_lists))) if with_slots else None,
        "sentence_acc": pct(sum(i and t for i, t in zip(intent_ok, tags_ok, strict=True)) / n),
        "per_intent": {
            k: {"n": c, "acc": pct(ok / c)} for k, (c, ok) in sorted(per_intent.items())
        },
        "unseen_intents": sorted(set(gold_intents) - known),
        "worst_slot_types": slot_types[:WORST_SLOT_TYPES],
    }
