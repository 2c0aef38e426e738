"""Dataset readers for the two formats in DESIGN.md, with validation that names file and line.

1. BIO folders: `DIR/{train,dev,test}/{seq.in,seq.out,label}`.
2. Span JSONL: `DIR/{train,dev,test}.jsonl` with character-offset entities, converted to word-level
   BIO with the same word splitter the service uses (`service.contract.text.split_words`).

A missing dev split is carved from train, seeded and stratified by intent.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from service.contract.text import OUTSIDE_TAG, Word, decode_bio, split_words, words_from_tokens

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
OUT_OF_SCOPE_LABEL = "oos"
"""The label of out-of-scope utterances (CLINC150's); `export.onnx --oos-label` names another."""
DEV_FRACTION = 0.1


class DataError(ValueError):
    """Bad dataset content; the message names file, line and problem."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Example:
    """One utterance: its text, words (with offsets into text), one BIO tag per word, intent."""

    text: str
    words: tuple[Word, ...]
    tags: tuple[str, ...]
    intent: str


def slot_values(ex: Example) -> list[dict[str, str]]:
    """The example's slots as `[{"name", "value"}]`, the generator's answer format."""
    return [{"name": s.name, "value": s.value} for s in decode_bio(ex.text, ex.words, ex.tags)]


@dataclass
class Dataset:
    name: str
    source: Path
    splits: dict[str, list[Example]]
    warnings: Counter[str] = field(default_factory=Counter)
    dev_carved: bool = False


def check_tag(tag: str, path: Path, line: int) -> None:
    if tag != OUTSIDE_TAG and (tag[:2] not in ("B-", "I-") or len(tag) == 2):
        raise DataError(path, line, f"unknown BIO tag {tag!r} (expected O, B-<type> or I-<type>)")


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(path, None, "file not found")
    return path.read_text(encoding="utf-8").splitlines()


def read_bio_split(split_dir: Path) -> list[Example]:
    """Read `seq.in`, `seq.out`, `label` from one split folder."""
    seq_in, seq_out, label = (split_dir / n for n in ("seq.in", "seq.out", "label"))
    words_lines, tag_lines, intents = _read_lines(seq_in), _read_lines(seq_out), _read_lines(label)
    for path, lines in ((seq_out, tag_lines), (label, intents)):
        if len(lines) != len(words_lines):
            raise DataError(
                path, None, f"{len(lines)} lines but {seq_in.name} has {len(words_lines)}"
            )
    examples = []
    for n, (w_line, t_line, intent) in enumerate(
        zip(words_lines, tag_lines, intents, strict=True), start=1
    ):
        tokens, tags = w_line.split(), t_line.split()
        if not tokens:
            raise DataError(seq_in, n, "empty utterance")
        if len(tags) != len(tokens):
            raise DataError(seq_out, n, f"{len(tags)} tags for {len(tokens)} words")
        for tag in tags:
            check_tag(tag, seq_out, n)
        if not intent.strip():
            raise DataError(label, n, "empty intent")
        text, words = words_from_tokens(tokens)
        examples.append(Example(text, tuple(words), tuple(tags), intent.strip()))
    return examples


def spans_to_bio(
    text: str,
    words: list[Word],
    entities: list[dict],
    path: Path,
    line: int,
    warnings: Counter[str],
) -> tuple[str, ...]:
    """Tag every word a span touches; spans off word boundaries are widened and counted."""
    tags = [OUTSIDE_TAG] * len(words)
    ordered = sorted(entities, key=lambda e: (e["start"], e["end"]))
    for prev, ent in zip([None, *ordered], ordered, strict=False):
        start, end, name = ent["start"], ent["end"], ent["entity"]
        if not 0 <= start < end <= len(text):
            raise DataError(
                path, line, f"span [{start}, {end}) out of range for text of {len(text)} characters"
            )
        if prev is not None and start < prev["end"]:
            raise DataError(
                path,
                line,
                f"overlapping spans [{prev['start']}, {prev['end']}) and [{start}, {end})",
            )
        covered = [i for i, w in enumerate(words) if w.start < end and start < w.end]
        if not covered:
            raise DataError(path, line, f"span [{start}, {end}) covers only whitespace")
        if words[covered[0]].start != start or words[covered[-1]].end != end:
            warnings["span widened to whole words"] += 1
        for k, i in enumerate(covered):
            if tags[i] != OUTSIDE_TAG:
                raise DataError(path, line, f"word {words[i].text!r} is covered by two spans")
            tags[i] = ("B-" if k == 0 else "I-") + name
    return tuple(tags)


def read_jsonl_split(path: Path, warnings: Counter[str]) -> list[Example]:
    """Read span JSONL: `{"text", "intent", "entities": [{"start", "end", "entity"}]}`."""
    examples = []
    for n, raw in enumerate(_read_lines(path), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(path, n, f"invalid JSON: {e.msg}") from e
        if not isinstance(obj, dict):
            raise DataError(path, n, "expected a JSON object")
        text, intent = obj.get("text"), obj.get("intent")
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, n, "empty utterance ('text' missing or blank)")
        if not isinstance(intent, str) or not intent.strip():
            raise DataError(path, n, "'intent' missing or blank")
        entities = obj.get("entities", [])
        if not isinstance(entities, list):
            raise DataError(path, n, "'entities' must be a list")
        for ent in entities:
            if not (
                isinstance(ent, dict)
                and isinstance(ent.get("start"), int)
                and isinstance(ent.get("end"), int)
                and isinstance(ent.get("entity"), str)
                and ent["entity"].strip()
                and not any(c.isspace() for c in ent["entity"])
            ):
                raise DataError(
                    path,
                    n,
                    f"bad entity {ent!r}: needs int start/end and a "
                    "non-blank 'entity' name without spaces",
                )
        words = split_words(text)
        tags = spans_to_bio(text, words, entities, path, n, warnings)
        examples.append(Example(text, tuple(words), tags, intent.strip()))
    if not examples:
        raise DataError(path, None, "no examples")
    return examples


def carve_dev(train: list[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """Split DEV_FRACTION of train off as dev, per intent (intents with one example stay)."""
    by_intent: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(train):
        by_intent[ex.intent].append(i)
    rng = random.Random(seed)
    dev_ids: set[int] = set()
    for intent in sorted(by_intent):
        ids = by_intent[intent]
        if len(ids) < 2:
            continue
        rng.shuffle(ids)
        dev_ids.update(ids[: max(1, round(len(ids) * DEV_FRACTION))])
    return (
        [ex for i, ex in enumerate(train) if i not in dev_ids],
        [ex for i, ex in enumerate(train) if i in dev_ids],
    )


def detect_format(root: Path) -> str:
    if (root / "train" / "seq.in").is_file():
        return "bio"
    if (root / "train.jsonl").is_file():
        return "jsonl"
    raise DataError(
        root, None, "not a dataset: expected train/seq.in (BIO folders) or train.jsonl (span JSONL)"
    )


def read_dataset(root: Path, name: str | None = None, seed: int = 13) -> Dataset:
    """Read every split present under `root`; carve dev from train when it is missing."""
    fmt = detect_format(root)
    warnings: Counter[str] = Counter()
    splits: dict[str, list[Example]] = {}
    for split in SPLITS:
        if fmt == "bio" and (root / split).is_dir():
            splits[split] = read_bio_split(root / split)
        elif fmt == "jsonl" and (root / f"{split}.jsonl").is_file():
            splits[split] = read_jsonl_split(root / f"{split}.jsonl", warnings)
    dataset = Dataset(name or root.name, root, splits, warnings)
    if "dev" not in splits:
        splits["train"], splits["dev"] = carve_dev(splits["train"], seed)
        dataset.dev_carved = True
        log.warning("%s: no dev split, carved %d examples from train", root, len(splits["dev"]))
    for problem, count in warnings.items():
        log.warning("%s: %d × %s", root, count, problem)
    warn_unseen_labels(dataset)
    return dataset


def slot_type_counts(examples: list[Example]) -> Counter[str]:
    """Spans per slot type (B- tags)."""
    return Counter(t[2:] for ex in examples for t in ex.tags if t.startswith("B-"))


def warn_unseen_labels(dataset: Dataset) -> None:
    """Intents and slot types of dev/test never seen in training: a model cannot predict them,
    so every one of them is an error. Named with their counts, once per split. The out-of-scope
    label is no such error: it is said once where it is (test only: nothing can be chosen on
    it), and data without it is told how to detect the open world anyway."""
    train = dataset.splits["train"]
    intents, types = {ex.intent for ex in train}, set(slot_type_counts(train))
    for split in ("dev", "test"):
        examples = dataset.splits.get(split, [])
        unseen_intents = Counter(
            ex.intent for ex in examples if ex.intent not in intents | {OUT_OF_SCOPE_LABEL}
        )
        unseen_types = {t: n for t, n in slot_type_counts(examples).items() if t not in types}
        for kind, unseen in (("intents", unseen_intents), ("slot types", unseen_types)):
            if unseen:
                listed = ", ".join(f"{name} ({n})" for name, n in sorted(unseen.items()))
                log.warning(
                    "%s: %s holds %d %s never seen in training (always wrong): %s",
                    dataset.source, split, len(unseen), kind, listed,
                )  # fmt: skip
    splits_with = [
        split
        for split in SPLITS
        if any(ex.intent == OUT_OF_SCOPE_LABEL for ex in dataset.splits.get(split, []))
    ]
    if "dev" in splits_with:
        return
    where = (
        f"out-of-scope utterances ({OUT_OF_SCOPE_LABEL!r}) in {' and '.join(splits_with)} only: "
        "no detector is chosen on them"
        if splits_with
        else "no out-of-scope examples"
    )
    log.warning(
        "%s: %s; to flag utterances no intent covers, export with --open-world (a detector "
        "learnt from in-scope data alone)",
        dataset.source,
        where,
    )
