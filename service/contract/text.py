"""Text processing shared by training and serving: one copy, imported by both.

Words are whitespace-separated (the convention of the BIO datasets); each word is tokenised into
sub-tokens and only the first sub-token of a word carries the word's tag. BIO decoding turns
per-word tags back into character spans of the original text.

No torch here: the serving process imports this module.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from service.contract.types import Slot

OUTSIDE_TAG = "O"
IGNORE_INDEX = -100
"""Label for sub-tokens that carry no tag (special, padding, non-first sub-tokens)."""

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Word:
    """A whitespace-separated word with its character offsets into the original text."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class EncodedBatch:
    """Padded model inputs for a batch of utterances and the token→word alignment.

    `word_index[b, t]` is the index of the word whose *first* sub-token sits at position t, or -1
    (special tokens, padding, continuation sub-tokens). `truncated_words[b]` counts the words that
    did not fit in `max_seq_len` and are therefore tagged O.
    """

    input_ids: np.ndarray  # (B, T) int64
    attention_mask: np.ndarray  # (B, T) int64
    token_type_ids: np.ndarray  # (B, T) int64
    word_index: np.ndarray  # (B, T) int64
    words: list[list[Word]]
    truncated_words: list[int]


def split_words(text: str) -> list[Word]:
    """Split on whitespace, keeping character offsets."""
    return [Word(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def words_from_tokens(tokens: Sequence[str]) -> tuple[str, list[Word]]:
    """Rebuild text from pre-split words (BIO datasets) so offsets match `split_words`."""
    text = " ".join(tokens)
    return text, split_words(text)


def load_tokenizer(path: str | Path, max_seq_len: int) -> Tokenizer:
    """Load a `tokenizer.json`, replacing whatever padding/truncation it was saved with."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_len)
    return tokenizer


def encode_words(tokenizer: Tokenizer, batch_words: Sequence[Sequence[Word]]) -> EncodedBatch:
    """Tokenise pre-split words, pad to the longest sequence and align sub-tokens to words."""
    encodings = tokenizer.encode_batch(
        [[w.text for w in words] for words in batch_words], is_pretokenized=True
    )
    seq_len = max(len(e.ids) for e in encodings)
    batch = len(encodings)
    input_ids = np.zeros((batch, seq_len), dtype=np.int64)
    attention_mask = np.zeros((batch, seq_len), dtype=np.int64)
    token_type_ids = np.zeros((batch, seq_len), dtype=np.int64)
    word_index = np.full((batch, seq_len), -1, dtype=np.int64)
    truncated: list[int] = []
    for b, (enc, words) in enumerate(zip(encodings, batch_words, strict=True)):
        n = len(enc.ids)
        input_ids[b, :n] = enc.ids
        attention_mask[b, :n] = enc.attention_mask
        token_type_ids[b, :n] = enc.type_ids
        seen: set[int] = set()
        for t, w in enumerate(enc.word_ids):
            if w is not None and w not in seen:
                seen.add(w)
                word_index[b, t] = w
        # A word whose first sub-token was cut off (or that tokenises to nothing) has no position.
        last_kept = max(seen) + 1 if seen else 0
        truncated.append(len(words) - last_kept)
    return EncodedBatch(
        input_ids,
        attention_mask,
        token_type_ids,
        word_index,
        [list(w) for w in batch_words],
        truncated,
    )


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str]) -> EncodedBatch:
    """Split raw texts into words and encode them: the serving entry point."""
    return encode_words(tokenizer, [split_words(t) for t in texts])


def token_labels(word_index: np.ndarray, word_tag_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Per-token training labels: the word's tag on its first sub-token, IGNORE_INDEX elsewhere."""
    labels = np.full(word_index.shape, IGNORE_INDEX, dtype=np.int64)  # (B, T)
    for b, tags in enumerate(word_tag_ids):
        positions = np.nonzero(word_index[b] >= 0)[0]
        labels[b, positions] = np.asarray(tags, dtype=np.int64)[word_index[b, positions]]
    return labels


def word_scores(word_index_row: np.ndarray, token_scores: np.ndarray, n_words: int) -> np.ndarray:
    """Gather first-sub-token rows of `token_scores` (T, S) into per-word rows (W, S).

    Words without a position (truncated) get a row of NaN so callers can tag them O.
    """
    out = np.full((n_words, token_scores.shape[-1]), np.nan, dtype=np.float64)
    positions = np.nonzero(word_index_row >= 0)[0]
    out[word_index_row[positions]] = token_scores[positions]
    return out


def span_end(text: str, last: Word) -> int:
    """Where a span ending in word `last` ends: before punctuation glued to the end of the word
    ("PARIS?" → "PARIS", "tomorrow," → "tomorrow"), which the model tags with the word but which
    is not part of the value. A final period stays in an abbreviation ("a.m.", "U.S."), and a
    word made of punctuation only is kept whole."""
    end = last.end
    while end > last.start + 1 and unicodedata.category(text[end - 1]).startswith("P"):
        if text[end - 1] == "." and "." in text[last.start : end - 1]:
            break
        end -= 1
    if all(unicodedata.category(ch).startswith("P") for ch in text[last.start : end]):
        return last.end
    return end


# What an emoji is written with besides its So/Sk code points: variation selectors, the
# zero-width joiner of sequences, the keycap.
EMOJI_JOINERS = frozenset("\ufe0e\ufe0f\u200d\u20e3")


def is_pictograph(ch: str) -> bool:
    """Emoji, dingbats and other pictographic symbols (Unicode So, Sk), not currency or math
    signs, which belong to values ("$500")."""
    return ch in EMOJI_JOINERS or unicodedata.category(ch) in ("So", "Sk")


def span_bounds(text: str, first: Word, last: Word) -> tuple[int, int]:
    """The character range of a span from word `first` to word `last`, without the
    pictographs (emoji) at either end, whole words or glued, and without the punctuation glued
    to its end (`span_end`). Empty (start == end) when nothing else is left."""
    start, end = first.start, last.end
    while start < end and (is_pictograph(text[start]) or text[start].isspace()):
        start += 1
    trimmed = None
    while end > start and end != trimmed:  # "denver✈️!": the "!", then the emoji
        trimmed = end
        while end > start and (is_pictograph(text[end - 1]) or text[end - 1].isspace()):
            end -= 1
        if end > start:
            last_start = max(start, text.rfind(" ", 0, end) + 1)
            end = span_end(text, Word(text[last_start:end], last_start, end))
    return start, end


def decode_bio(
    text: str,
    words: Sequence[Word],
    tags: Sequence[str],
    confidences: Sequence[float] | None = None,
) -> list[Slot]:
    """Turn per-word BIO tags into slots with character offsets into `text`.

    An I- tag that does not continue a span of the same type starts a new span (conlleval's
    lenient reading). A span's confidence is the lowest confidence among its words. Punctuation
    glued to the end of a span's last word and emoji at either end stay out of the span
    (`span_bounds`); a span of emoji alone is no slot.
    """
    if len(words) != len(tags):
        raise ValueError(f"{len(tags)} tags for {len(words)} words")
    conf = list(confidences) if confidences is not None else [1.0] * len(words)
    slots: list[Slot] = []
    current: tuple[str, int, int, float] | None = None  # name, first word, last word, confidence

    def close() -> None:
        if current is not None:
            name, first, last, c = current
            start, end = span_bounds(text, words[first], words[last])
            if end > start:
                slots.append(Slot(name, text[start:end], start, end, c))

    for i, tag in enumerate(tags):
        prefix, _, name = tag.partition("-")
        if tag == OUTSIDE_TAG or not name or prefix not in ("B", "I"):
            close()
            current = None
        elif prefix == "I" and current is not None and current[0] == name:
            current = (name, current[1], i, min(current[3], conf[i]))
        else:
            close()
            current = (name, i, i, conf[i])
    close()
    return slots


def slots_to_tags(words: Sequence[Word], slots: Sequence[Slot]) -> list[str]:
    """Per-word BIO tags of character-offset slots (the inverse of `decode_bio`): every word a
    slot touches gets its type, B- on the first."""
    tags = [OUTSIDE_TAG] * len(words)
    for slot in slots:
        covered = [i for i, w in enumerate(words) if w.start < slot.end and slot.start < w.end]
        for k, i in enumerate(covered):
            tags[i] = ("B-" if k == 0 else "I-") + slot.name
    return tags


def viterbi(
    emissions: np.ndarray, start: np.ndarray, end: np.ndarray, transitions: np.ndarray
) -> list[int]:
    """Best tag sequence of a linear-chain CRF: emissions (W, S), start/end (S,), transitions
    (S, S) indexed [from, to]. Runs outside the exported graph, in numpy.

    Most utterances skip the (S × S) max-plus per word: when every word's best tag beats its
    second by more than changing it could gain through the word's two transitions (plus start
    or end at the edges), the per-word argmax is the unique best path (`argmax_is_best`)."""
    if argmax_is_best(emissions, start, end, transitions):
        return emissions.argmax(axis=-1).tolist()
    score = start + emissions[0]  # (S,)
    columns = np.arange(len(score))
    backpointers = []
    for row in emissions[1:]:
        candidates = score[:, None] + transitions  # (S_from, S_to)
        best_from = candidates.argmax(axis=0)  # (S_to,)
        backpointers.append(best_from)
        score = candidates[best_from, columns] + row
    best = [int((score + end).argmax())]
    for pointers in reversed(backpointers):
        best.append(int(pointers[best[-1]]))
    return best[::-1]


def argmax_is_best(
    emissions: np.ndarray, start: np.ndarray, end: np.ndarray, transitions: np.ndarray
) -> bool:
    """Whether the per-word argmax is provably the only best path. A path that differs at a
    set D of words loses at least the sum of those words' margins (best minus second-best
    emission) and gains at most the spread of the transitions (max minus min) for each
    transition touching D, at most two per word, plus the spread of start (end) when D holds
    the first (last) word. So margins above that, word by word, leave no path as good. A slack
    keeps rounding in the full recursion's sums from mattering."""
    words = len(emissions)
    if emissions.shape[-1] < 2:
        return True
    top_two = np.partition(emissions, -2, axis=-1)[:, -2:]  # (W, 2): second, best
    margins = top_two[:, 1] - top_two[:, 0]  # (W,)
    highest, lowest = float(transitions.max()), float(transitions.min())
    bound = np.full(words, 2 * (highest - lowest))  # (W,)
    bound[0] += float(start.max() - start.min())
    bound[-1] += float(end.max() - end.min())
    largest = max(float(np.abs(emissions).max()), words * max(highest, -lowest))
    return bool((margins > bound + 1e-6 * (1.0 + largest)).all())


CrfParams = tuple[np.ndarray, np.ndarray, np.ndarray]  # (start, end, transitions)


def softmax(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = x / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def decode_word_tags(
    word_logits: np.ndarray, slot_tags: Sequence[str], crf: CrfParams | None = None
) -> tuple[list[str], list[float]]:
    """Per-word tag (argmax, or Viterbi with a CRF) and its softmax probability.

    Words without a position (NaN rows of `word_scores`: past max_seq_len, or words that yield
    no tokens, such as a lone zero-width character, anywhere in the utterance) are tagged O with
    probability 1; the others are decoded as one sequence, as if those words were not there.
    """
    kept = np.flatnonzero(~np.isnan(word_logits).any(axis=-1))  # (W_kept,)
    probs = softmax(word_logits[kept])  # (W_kept, S)
    if len(kept) == 0:
        ids: list[int] = []
    elif crf is None:
        ids = probs.argmax(axis=-1).tolist()
    else:
        ids = viterbi(word_logits[kept], *crf)
    tags = [OUTSIDE_TAG] * len(word_logits)
    confidences = [1.0] * len(word_logits)
    for row, (w, i) in enumerate(zip(kept, ids, strict=True)):
        tags[w], confidences[w] = slot_tags[i], float(probs[row, i])
    return tags, confidences
