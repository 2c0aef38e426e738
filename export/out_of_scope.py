"""Choose a bundle's out-of-scope detector on dev (`service.contract.oos` runs it).

Each method's threshold is the largest that flags at most `budget` % of the dev in-scope
utterances (a false-rejection budget; the model's own errors are not counted against it): the
most out-of-scope recall that budget buys (recall only grows with the threshold, in-scope accuracy
only falls). The method with the highest dev recall wins (ties: higher in-scope accuracy, then the
simpler method). A dataset with no out-of-scope utterances in dev (none labelled `label`; intents
unseen in training are errors, not out-of-scope) has nothing to compare methods on: detection
stays off unless asked for, so closed-world bundles (ATIS, SNIPS) answer as before. Asking is one
flag: `--open-world [BUDGET]` ships the in-scope-only detector (OPEN_WORLD_METHOD: kNN on the
served embedding, the best of the open-intent suite's candidates) at a BUDGET % false-rejection
rate on dev (default DEFAULT_FALSE_REJECTION); `--oos-method` forces any method at `--oos-budget`.

Outputs come from the served graph, run as the engine runs it, so the thresholds hold for what
is served; any change of graph or model re-runs this. The kNN reference data is written whatever
the method: runtime extension intents (`service.extensions`) are matched against it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.artifacts import Artifacts
from export.data import OUT_OF_SCOPE_LABEL, Example
from export.extension_rule import choose_extension_rule
from export.graph_run import graph_batches
from export.scoring import pct
from service.contract.bundle import DetectorReport, OutOfScopeRecord
from service.contract.oos import (
    METHODS,
    Detector,
    Method,
    Reference,
    fit_reference,
    write_reference,
)
from service.contract.text import softmax

log = logging.getLogger(__name__)

DEFAULT_LABEL = OUT_OF_SCOPE_LABEL
DEFAULT_BUDGET = 1.0
OPEN_WORLD_METHOD: Method = "knn"
DEFAULT_FALSE_REJECTION = 5.0
"""`--open-world`'s default budget: 1 in 20 in-scope utterances flagged on dev. The open-intent
suite measures what 1 % and 5 % cost (benchmarks/README.md)."""
OPEN_WORLD_HINT = (
    "--open-world turns on an in-scope-only detector at a "
    f"{DEFAULT_FALSE_REJECTION:g} % false-rejection budget"
)


@dataclass(frozen=True)
class GraphOutputs:
    """What a detector needs from the graph for a list of utterances."""

    probabilities: np.ndarray  # (N, I) calibrated
    embeddings: np.ndarray  # (N, H) L2-normalised


def graph_outputs(
    sess, artifacts: Artifacts, examples: Sequence[Example], names: list[str], batch_size: int
) -> GraphOutputs:
    intent_rows, embedding_rows = [], []
    for _, (intent, _, embedding) in graph_batches(
        sess, artifacts.tokenizer, examples, names, batch_size
    ):
        intent_rows.append(intent)
        embedding_rows.append(embedding)
    logits = np.concatenate(intent_rows).astype(np.float64)  # (N, I)
    return GraphOutputs(
        softmax(logits, artifacts.config["temperature"]), np.concatenate(embedding_rows)
    )


def oos_metrics(
    flags: np.ndarray, predicted: Sequence[str], gold_oos: np.ndarray, gold: Sequence[str]
) -> dict:
    """In-scope accuracy (right intent and not flagged), OOS recall, precision and F1 in percent;
    the OOS ones None when there are no out-of-scope utterances."""
    right = np.array([p == g for p, g in zip(predicted, gold, strict=True)])
    n_in, n_oos = int((~gold_oos).sum()), int(gold_oos.sum())
    caught, flagged = int((flags & gold_oos).sum()), int(flags.sum())
    report = {
        "in_scope_accuracy": pct(float((right & ~flags & ~gold_oos).sum()) / max(n_in, 1)),
        "oos_recall": None,
        "oos_precision": None,
        "oos_f1": None,
    }
    if n_oos:
        recall, precision = caught / n_oos, caught / flagged if flagged else 0.0
        f1 = 2 * precision * recall / (precision + recall) if caught else 0.0
        report |= {"oos_recall": pct(recall), "oos_precision": pct(precision), "oos_f1": pct(f1)}
    return report


def budget_threshold(
    scores: np.ndarray, correct: np.ndarray, n_in_scope: int, budget: float
) -> float:
    """The largest threshold that flags at most `budget` % of the in-scope utterances the model
    gets right (those with a score below it); with none right, the lowest score (flags none)."""
    kept = np.sort(scores[correct])
    if not len(kept):
        return float(scores.min()) if len(scores) else 0.0
    allowed = int(np.floor(budget / 100 * n_in_scope))
    return float(kept[min(allowed, len(kept) - 1)])


def choose(
    dev: GraphOutputs,
    dev_gold: Sequence[str],
    train: GraphOutputs,
    train_gold: Sequence[str],
    intents: Sequence[str],
    label: str,
    budget: float,
    method: Method | None,
    open_world: float | None = None,
) -> tuple[OutOfScopeRecord, dict[str, Reference]]:
    """Every applicable method on dev at its budget threshold (and its reference data), and the
    one to ship: `method` when named, else OPEN_WORLD_METHOD at the `open_world` budget when
    given, else the dev rule."""
    if open_world is not None and method is None:
        method, budget = OPEN_WORLD_METHOD, open_world
    trained = label in intents
    in_scope = np.array([i != label for i in intents])
    dev_oos = np.array([g == label for g in dev_gold])  # unseen intents are errors, not OOS
    argmax = dev.probabilities.argmax(axis=1)
    predicted = [intents[i] if in_scope[i] else label for i in argmax]
    correct = np.array([p == g for p, g in zip(predicted, dev_gold, strict=True)]) & ~dev_oos
    keep = np.array([g != label and g in intents for g in train_gold])  # in scope, known
    train_in = [g for g, k in zip(train_gold, keep, strict=True) if k]
    reports: dict[str, DetectorReport] = {}
    references: dict[str, Reference] = {}
    for name in METHODS:
        if name == "oos_class" and not trained:
            continue
        reference = fit_reference(name, train.embeddings[keep], train_in, list(intents))
        probe = Detector(name, None, in_scope, reference)
        _, scores = probe.decide(dev.probabilities, dev.embeddings)
        threshold = (
            None
            if name == "oos_class"
            else budget_threshold(scores, correct, int((~dev_oos).sum()), budget)
        )
        flags = Detector(name, threshold, in_scope, reference).flags(dev.probabilities, scores)
        reports[name] = DetectorReport(
            threshold=threshold, **oos_metrics(flags, predicted, dev_oos, dev_gold)
        )
        references[name] = reference
    if open_world is not None and method == OPEN_WORLD_METHOD:
        chosen = method
        why = (
            f"open world (--open-world): {method} from in-scope data alone, threshold at "
            f"{budget:g} % false rejections on dev"
        )
    elif method is not None:
        chosen, why = method, "named at export"
    elif dev_oos.any():
        chosen = max(
            reports,
            key=lambda n: (
                reports[n].oos_recall,
                reports[n].in_scope_accuracy,
                -METHODS.index(n),
            ),
        )
        why = "dev: highest out-of-scope recall within the in-scope budget"
    else:
        chosen, why = (
            "off",
            f"dev has no out-of-scope utterances: detection off ({OPEN_WORLD_HINT})",
        )
    record = OutOfScopeRecord(
        method=chosen,
        threshold=reports[chosen].threshold if chosen in reports else None,
        trained_label=label if trained else None,
        in_scope_budget=budget,
        chosen_by=why,
        dev=reports,
    )
    return record, references


def build_out_of_scope(
    sess,
    artifacts: Artifacts,
    bundle_dir: Path,
    train: Sequence[Example],
    dev: Sequence[Example],
    names: list[str],
    batch_size: int,
    label: str = DEFAULT_LABEL,
    budget: float = DEFAULT_BUDGET,
    method: Method | None = None,
    open_world: float | None = None,
) -> OutOfScopeRecord:
    """Choose the detector with the served graph `sess` and write its reference data."""
    intents = list(artifacts.labels.intents)
    dev_out = graph_outputs(sess, artifacts, dev, names, batch_size)
    train_out = graph_outputs(sess, artifacts, train, names, batch_size)
    record, references = choose(
        dev_out,
        [ex.intent for ex in dev],
        train_out,
        [ex.intent for ex in train],
        intents,
        label,
        budget,
        method,
        open_world,
    )
    rule = choose_extension_rule(
        dev_out,
        [ex.intent for ex in dev],
        train_out,
        [ex.intent for ex in train],
        intents,
        record.trained_label,
    )
    record = record.model_copy(update={"extension": rule})
    write_reference(bundle_dir, references.get(record.method, Reference()))
    write_reference(bundle_dir, references["knn"])  # extension intents compare against it
    log.info(
        "out-of-scope: %s (threshold %s; %s); dev: %s",
        record.method,
        record.threshold,
        record.chosen_by,
        {k: v.model_dump() for k, v in record.dev.items()},
    )
    log.info("extension intents: %s", rule.model_dump() if rule is not None else "no rule")
    return record
