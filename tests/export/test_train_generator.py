"""Fine-tuning the generator: answer-only labels, a few real steps on a tiny LM, and a checkpoint
the local backend serves with the plain prompt."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from export.data import read_dataset
from export.train_generator import (
    TRAINING_RECORD,
    GeneratorTrainConfig,
    chat_tokens,
    length_buckets,
    train_generator,
)
from service.contract.prompt import build_plain_messages
from service.contract.text import IGNORE_INDEX
from service.generators.local import LocalBackend


def test_only_the_answer_is_labelled(tiny_lm: Path, small_atis: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    example = read_dataset(small_atis).splits["train"][0]
    ids, labels = chat_tokens(tokenizer, example)
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
