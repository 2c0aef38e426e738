"""Fine-tuning the generator: answer-only labels, a few real steps on a tiny LM, and a checkpoint
the local backend serves with the plain prompt."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from pathlib import Path

import pytest

from export.data import read_dataset
from export.train_generator import (
    TRAINING_RECORD,
    GeneratorTrainConfig,
    chat_tokens,
    frame_chats,
    length_buckets,
    train_generator,
)
from service.contract.prompt import NONE, answer_start, build_plain_messages, build_scope_messages
from service.contract.text import IGNORE_INDEX
from service.generators.local import LocalBackend


def test_only_the_answer_is_labelled(tiny_lm: Path, small_atis: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    example = read_dataset(small_atis).splits["train"][0]
    ids, labels = chat_tokens(tokenizer, *frame_chats([example], 0)[0])
    answer = [t for t in labels if t != IGNORE_INDEX]
    first = labels.index(answer[0])
    assert all(t == IGNORE_INDEX for t in labels[:first]) and labels[first:] == ids[first:]
    frame = json.loads(tokenizer.decode(answer, skip_special_tokens=True))
    assert frame["intent"] == example.intent


def test_length_buckets_cover_every_item_once():
    items = [([0] * n, [0] * n) for n in range(1, 51)]
    batches = length_buckets(items, 4, random.Random(0))
    assert sorted(len(i[0]) for b in batches for i in b) == list(range(1, 51))
    assert all(len(b) <= 4 for b in batches)


def test_fine_tune_a_tiny_lm_and_serve_it(tiny_lm: Path, small_atis: Path, tmp_path: Path):
    out = tmp_path / "generator"
    record = train_generator(
        GeneratorTrainConfig(
            data=str(small_atis), out=str(out), model=str(tiny_lm), max_examples=8, batch_size=4
        )
    )
    assert record["steps"] == 2 and len(record["losses"]) == 2
    assert json.loads((out / TRAINING_RECORD).read_text())["prompt"] == "plain"
    backend = LocalBackend(model=str(out), threads=1, max_new_tokens=8)
    backend.load()
    text = asyncio.run(backend.generate(build_plain_messages("flights to denver"), 30.0))
    assert isinstance(text, str)


def test_scope_chats_show_the_encoders_candidates_or_none(tiny_clinc_bundle, small_clinc):
    from export.scope_chats import scope_chats

    train = read_dataset(small_clinc).splits["train"]
    chats = scope_chats(train, tiny_clinc_bundle, 3, 0.0, random.Random(0))
    for ex, chat in zip(train, chats, strict=True):
        assert len(chat.candidates) == 3 and "oos" not in chat.candidates
        assert chat.answer == (ex.intent if ex.intent in chat.candidates else NONE)
    assert any(c.answer == NONE for c, ex in zip(chats, train, strict=True) if ex.intent == "oos")
    dropped = scope_chats(train, tiny_clinc_bundle, 3, 1.0, random.Random(0))
    assert all(c.answer == NONE for c in dropped)  # every right intent taken out


def test_fine_tune_a_scope_decision_and_score_with_it(
    tiny_lm: Path, tiny_clinc_bundle: Path, small_clinc: Path, tmp_path: Path
):
    out = tmp_path / "scope"
    config = GeneratorTrainConfig(
        data=str(small_clinc),
        out=str(out),
        model=str(tiny_lm),
        task="scope",
        bundle=str(tiny_clinc_bundle),
        max_examples=6,
        batch_size=4,
    )
    record = train_generator(config)
    oos = sum(1 for ex in read_dataset(small_clinc).splits["train"] if ex.intent == "oos")
    assert record["task"] == "scope" and record["examples"] == 6 + oos
    assert record["answers"]["none"] >= oos
    backend = LocalBackend(model=str(out), threads=1, max_new_tokens=8)
    backend.load()
    messages = build_scope_messages("book a flight", ["book_flight", "translate"], [], None)
    options = [answer_start(o) for o in ("book_flight", "translate", NONE)]
    assert len(asyncio.run(backend.score(messages, options, 30.0))) == 3
    with pytest.raises(ValueError, match="--bundle"):
        train_generator(dataclasses.replace(config, bundle=""))
