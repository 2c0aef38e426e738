from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from export.data import DataError, carve_dev, read_bio_split, read_dataset
from service.contract.labels import LabelSet


def write_bio(root: Path, split: str, words: list[str], tags: list[str], intents: list[str]):
    d = root / split
    d.mkdir(parents=True, exist_ok=True)
    (d / "seq.in").write_text("\n".join(words) + "\n")
    (d / "seq.out").write_text("\n".join(tags) + "\n")
    (d / "label").write_text("\n".join(intents) + "\n")
    return d


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_reads_real_atis_counts(small_atis):
    ds = read_dataset(small_atis)
    assert [len(ds.splits[s]) for s in ("train", "dev", "test")] == [300, 60, 60]
    ex = ds.splits["train"][0]
    assert len(ex.words) == len(ex.tags) and ex.text == " ".join(w.text for w in ex.words)
    assert not ds.dev_carved


@pytest.mark.parametrize(
    ("words", "tags", "intents", "where", "problem"),
    [
        (["a b", "c"], ["O O", "O O"], ["x", "y"], "seq.out:2", "2 tags for 1 words"),
        (["a b"], ["O X-city"], ["x"], "seq.out:1", "unknown BIO tag 'X-city'"),
        (["a b"], ["O B-"], ["x"], "seq.out:1", "unknown BIO tag 'B-'"),
        (["a", "  "], ["O", ""], ["x", "y"], "seq.in:2", "empty utterance"),
        (["a"], ["O"], [" "], "label:1", "empty intent"),
        (["a", "b"], ["O", "O"], ["x"], "label", "1 lines but seq.in has 2"),
    ],
)
def test_bio_errors_name_file_line_and_problem(tmp_path, words, tags, intents, where, problem):
    d = write_bio(tmp_path, "train", words, tags, intents)
    with pytest.raises(DataError) as err:
        read_bio_split(d)
    assert where in str(err.value) and problem in str(err.value)
    assert str(d) in str(err.value)


def test_jsonl_converts_spans_to_word_bio_and_counts_widening(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "text": "fly from new york to denver",
                "intent": "flight",
                "entities": [
                    {"start": 9, "end": 17, "entity": "from"},
                    {"start": 21, "end": 24, "entity": "to"},
                ],
            },  # "den" → widened to "denver"
            {"text": "hello", "intent": "greet"},
        ]
        * 10,
    )
    ds = read_dataset(tmp_path, seed=1)
    ex = next(e for e in ds.splits["train"] + ds.splits["dev"] if e.intent == "flight")
    assert ex.tags == ("O", "O", "B-from", "I-from", "O", "B-to")
    assert ds.warnings["span widened to whole words"] == 10
    assert ds.dev_carved and len(ds.splits["dev"]) == 2


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("{not json", "invalid JSON"),
        ({"text": "", "intent": "x"}, "empty utterance"),
        ({"text": "a b", "intent": ""}, "'intent' missing"),
        (
            {"text": "a b", "intent": "x", "entities": [{"start": 0, "end": 9, "entity": "c"}]},
            "out of range",
        ),
        (
            {
                "text": "a b c",
                "intent": "x",
                "entities": [
                    {"start": 0, "end": 3, "entity": "c"},
                    {"start": 2, "end": 5, "entity": "d"},
                ],
            },
            "overlapping spans",
        ),
        (
            {
                "text": "ab",
                "intent": "x",
                "entities": [
                    {"start": 0, "end": 1, "entity": "c"},
                    {"start": 1, "end": 2, "entity": "d"},
                ],
            },
            "covered by two spans",
        ),
        ({"text": "a b", "intent": "x", "entities": [{"start": 0, "end": 1}]}, "bad entity"),
    ],
)
def test_jsonl_errors_name_file_line_and_problem(tmp_path, row, problem):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "ok", "intent": "x"}, row])
    with pytest.raises(DataError) as err:
        read_dataset(tmp_path)
    assert f"{path}:2" in str(err.value) and problem in str(err.value)


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="not a dataset"):
        read_dataset(tmp_path)


def test_carve_dev_is_deterministic_and_stratified(small_atis):
    train = read_dataset(small_atis).splits["train"]
    a_train, a_dev = carve_dev(train, seed=3)
    b_train, b_dev = carve_dev(train, seed=3)
    assert a_dev == b_dev and a_train == b_train
    assert len(a_train) + len(a_dev) == len(train)
    intents = Counter(ex.intent for ex in train)
    dev_intents = Counter(ex.intent for ex in a_dev)
    for intent, n in intents.items():
        if n >= 10:
            assert dev_intents[intent] == round(n * 0.1)
        if n == 1:
            assert dev_intents[intent] == 0


def test_labelset_unseen_intent_and_tag():
    from export.data import Example
    from service.contract.text import split_words

    ex = Example("a b", tuple(split_words("a b")), ("B-city", "O"), "flight")
    labels = LabelSet.from_examples([ex])
    assert labels.slot_tags == ("O", "B-city", "I-city")
    assert labels.intent_id("flight") == 0 and labels.intent_id("atis_day_name") == -1
    assert labels.tag_ids(("B-city", "I-unseen")) == [1, 0]
    assert LabelSet.from_json(labels.to_json()) == labels


def test_labels_of_dev_and_test_unseen_in_training_are_named_with_counts(tmp_path, caplog):
    rows = {
        "train": [("fly to boston", "flight", [(7, 13, "city")])],
        "dev": [("fly to boston", "flight", [(7, 13, "city")])],
        "test": [
            ("weather in paris", "weather", [(11, 16, "place")]),
            ("weather in rome", "weather", [(11, 15, "place")]),
        ],
    }
    for split, examples in rows.items():
        lines = [
            json.dumps(
                {
                    "text": text,
                    "intent": intent,
                    "entities": [{"start": s, "end": e, "entity": n} for s, e, n in ents],
                }
            )
            for text, intent, ents in examples
        ]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="export.data"):
        read_dataset(tmp_path)
    assert "test holds 1 intents never seen in training (always wrong): weather (2)" in caplog.text
    assert "test holds 1 slot types never seen in training (always wrong): place (2)" in caplog.text
    assert "dev holds" not in caplog.text


def write_intent_rows(folder: Path, rows: dict[str, list[tuple[str, str]]]) -> None:
    for split, examples in rows.items():
        lines = [json.dumps({"text": t, "intent": i, "entities": []}) for t, i in examples]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def test_out_of_scope_in_test_only_is_named_as_such_with_the_flag(tmp_path, caplog):
    write_intent_rows(
        tmp_path,
        {
            "train": [("fly to boston", "flight")],
            "dev": [("fly to rome", "flight")],
            "test": [("fly to oslo", "flight"), ("sing a song", "oos")],
        },
    )
    with caplog.at_level(logging.WARNING, logger="export.data"):
        read_dataset(tmp_path)
    assert "always wrong" not in caplog.text
    assert "out-of-scope utterances ('oos') in test only: no detector is chosen on them" in (
        caplog.text
    )
    assert "export with --open-world" in caplog.text


def test_data_without_out_of_scope_examples_is_pointed_to_the_flag(tmp_path, caplog):
    write_intent_rows(tmp_path, {"train": [("fly", "flight")], "dev": [("fly", "flight")]})
    with caplog.at_level(logging.WARNING, logger="export.data"):
        read_dataset(tmp_path)
    assert "no out-of-scope examples; to flag utterances no intent covers, export with " in (
        caplog.text
    )


def test_out_of_scope_in_dev_needs_no_hint(tmp_path, caplog):
    write_intent_rows(
        tmp_path,
        {"train": [("fly", "flight"), ("sing", "oos")], "dev": [("x", "flight"), ("y", "oos")]},
    )
    with caplog.at_level(logging.WARNING, logger="export.data"):
        read_dataset(tmp_path)
    assert "--open-world" not in caplog.text
