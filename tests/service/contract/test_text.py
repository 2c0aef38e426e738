from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.contract.packaged import default_encoder_path
from service.contract.text import (
    IGNORE_INDEX,
    Word,
    decode_bio,
    encode_texts,
    encode_words,
    load_tokenizer,
    slots_to_tags,
    split_words,
    token_labels,
    word_scores,
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(default_encoder_path() / "tokenizer.json", max_seq_len=16)


def test_split_words_keeps_offsets():
    text = "  book a  flight\tto denver "
    words = split_words(text)
    assert [w.text for w in words] == ["book", "a", "flight", "to", "denver"]
    assert all(text[w.start : w.end] == w.text for w in words)


def test_only_first_subtoken_of_each_word_is_aligned(tokenizer):
    enc = encode_texts(tokenizer, ["show flights to zzyqxbaw", "hi"])
    assert enc.input_ids.shape == enc.word_index.shape == enc.attention_mask.shape
    row = enc.word_index[0]
    assert list(row[row >= 0]) == [0, 1, 2, 3]  # one position per word, in order
    assert row[0] == -1  # [CLS]
    n_tokens = int(enc.attention_mask[0].sum())
    assert n_tokens > 6  # "zzyqxbaw" splits into several sub-tokens
    assert enc.attention_mask[1].sum() == 3  # [CLS] hi [SEP], then padding
    assert enc.truncated_words == [0, 0]


def test_truncation_reports_words_past_max_seq_len(tokenizer):
    text = " ".join(["denver"] * 30)
    enc = encode_texts(tokenizer, [text])
    assert enc.input_ids.shape[1] == 16
    assert enc.truncated_words == [30 - 14]  # 16 minus [CLS] and [SEP]


def test_token_labels_put_tags_on_first_subtokens(tokenizer):
    words = split_words("fly to zzyqxbaw")
    enc = encode_words(tokenizer, [words])
    labels = token_labels(enc.word_index, [[0, 0, 7]])
    tagged = labels[0][labels[0] != IGNORE_INDEX]
    assert list(tagged) == [0, 0, 7]
    assert labels[0][0] == IGNORE_INDEX


def test_word_scores_marks_truncated_words_nan():
    word_index = np.array([-1, 0, -1, 1, -1])
    scores = np.arange(10, dtype=float).reshape(5, 2)
    out = word_scores(word_index, scores, n_words=3)
    assert out[0].tolist() == [2.0, 3.0] and out[1].tolist() == [6.0, 7.0]
    assert np.isnan(out[2]).all()


def test_decode_bio_spans_and_offsets():
    text = "from new york to  denver tomorrow"
    words = split_words(text)
    tags = ["O", "B-from", "I-from", "O", "B-to", "I-date"]
    slots = decode_bio(text, words, tags, [1, 0.9, 0.8, 1, 0.7, 0.6])
    assert [(s.name, s.value, s.confidence) for s in slots] == [
        ("from", "new york", 0.8),
        ("to", "denver", 0.7),
        ("date", "tomorrow", 0.6),
    ]
    assert all(text[s.start : s.end] == s.value for s in slots)


def test_decode_bio_orphan_i_starts_a_span_and_type_change_splits():
    text = "a b c d"
    slots = decode_bio(text, split_words(text), ["I-x", "I-x", "I-y", "B-y"])
    assert [(s.name, s.value) for s in slots] == [("x", "a b"), ("y", "c"), ("y", "d")]


def test_decode_bio_rejects_length_mismatch():
    with pytest.raises(ValueError, match="2 tags for 1 words"):
        decode_bio("a", [Word("a", 0, 1)], ["O", "O"])


TAGS = st.sampled_from(["O", "B-city", "I-city", "B-date", "I-date", "I-time", "X-bad", "B-"])


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60), st.data())
def test_decoded_slots_are_exact_nonoverlapping_in_range(text, data):
    words = split_words(text)
    tags = data.draw(st.lists(TAGS, min_size=len(words), max_size=len(words)))
    slots = decode_bio(text, words, tags)
    for slot in slots:
        assert 0 <= slot.start < slot.end <= len(text)
        assert slot.value == text[slot.start : slot.end]
    for a, b in itertools.pairwise(slots):
        assert a.end <= b.start


@given(st.text(max_size=80))
def test_encoding_any_text_aligns_every_kept_word_once(text):
    tokenizer = load_tokenizer(default_encoder_path() / "tokenizer.json", max_seq_len=24)
    words = split_words(text)
    if not words:
        return
    enc = encode_words(tokenizer, [words])
    kept = enc.word_index[0][enc.word_index[0] >= 0]
    assert len(set(kept.tolist())) == len(kept)
    assert all(0 <= k < len(words) for k in kept)
    assert 0 <= enc.truncated_words[0] <= len(words)


@given(st.lists(st.sampled_from(["O", "B-a", "I-a", "B-b", "I-b"]), min_size=1, max_size=8))
def test_slots_to_tags_inverts_decode_bio(tags):
    words = split_words(" ".join(f"w{i}" for i in range(len(tags))))
    text = " ".join(w.text for w in words)
    slots = decode_bio(text, words, tags)
    # decode_bio reads an orphan I- as a new span: the round trip gives its B- form.
    assert decode_bio(text, words, slots_to_tags(words, slots)) == slots
    assert slots_to_tags(words, decode_bio(text, words, slots_to_tags(words, slots))) == (
        slots_to_tags(words, slots)
    )


@pytest.mark.parametrize(
    ("text", "tags", "values"),
    [
        ("what's the weather in PARIS?", ["O", "O", "O", "O", "B-city"], ["PARIS"]),
        ("tomorrow, please", ["B-date", "O"], ["tomorrow"]),
        ("from new york, to boston.", ["O", "B-c", "I-c", "O", "B-c"], ["new york", "boston"]),
        ("meet at 7 a.m.", ["O", "O", "B-time", "I-time"], ["7 a.m."]),
        ("fly to the U.S.", ["O", "O", "O", "B-country"], ["U.S."]),
        ("say ?!", ["O", "B-x"], ["?!"]),
        ("cost $500", ["O", "B-price"], ["$500"]),
        ("fly to 😀✈️ denver", ["O", "O", "B-city", "I-city"], ["denver"]),
        ("fly to denver 😀✈️", ["O", "O", "B-city", "I-city"], ["denver"]),
        ("fly to denver✈️!", ["O", "O", "B-city"], ["denver"]),
        ("fly to 👨‍👩‍👧 now", ["O", "O", "B-city", "O"], []),
        ("new 😀 york", ["B-city", "I-city", "I-city"], ["new 😀 york"]),
    ],
)
def test_spans_leave_out_punctuation_glued_to_their_end(text, tags, values):
    slots = decode_bio(text, split_words(text), tags)
    assert [s.value for s in slots] == values
    assert all(text[s.start : s.end] == s.value for s in slots)
