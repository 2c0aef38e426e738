from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from export.artifacts import load_artifacts
from export.crf import CRF, gather_words
from export.train import TrainConfig, train
from service.contract.text import argmax_is_best, viterbi


def path_score(em, start, end, trans, path):
    s = start[path[0]] + end[path[-1]] + sum(em[i, t] for i, t in enumerate(path))
    return s + sum(trans[a, b] for a, b in itertools.pairwise(path))


@pytest.fixture
def crf():
    torch.manual_seed(0)
    layer = CRF(3)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer


def test_nll_matches_brute_force_and_respects_mask(crf):
    emissions = torch.randn(2, 4, 3)
    tags = torch.tensor([[0, 2, 1, 1], [1, 0, 0, 0]])
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    start, end, trans = (p.detach().double().numpy() for p in (crf.start, crf.end, crf.transitions))
    expected = 0.0
    for b, length in enumerate((4, 2)):
        em = emissions[b, :length].double().numpy()
        scores = [
            path_score(em, start, end, trans, p) for p in itertools.product(range(3), repeat=length)
        ]
        log_z = np.logaddexp.reduce(scores)
        expected += log_z - path_score(em, start, end, trans, tags[b, :length].tolist())
    got = crf.nll(emissions, tags, mask).item() * 6  # per-word mean over 6 words
    assert got == pytest.approx(expected, rel=1e-5)


def test_viterbi_finds_the_best_path(crf):
    rng = np.random.default_rng(1)
    start, end, trans = crf.numpy_params()
    for _ in range(5):
        em = rng.normal(size=(4, 3))
        best = max(
            itertools.product(range(3), repeat=4),
            key=lambda p: path_score(em, start, end, trans, p),
        )
        assert viterbi(em, start, end, trans) == list(best)


def test_gather_words_picks_first_subtokens():
    logits = torch.arange(2 * 5 * 2, dtype=torch.float).reshape(2, 5, 2)
    word_index = np.array([[-1, 0, -1, 1, -1], [-1, 0, -1, -1, -1]])
    emissions, tags, mask = gather_words(logits, word_index, [[1, 0], [1]])
    assert emissions[0].tolist() == [logits[0, 1].tolist(), logits[0, 3].tolist()]
    assert tags.tolist() == [[1, 0], [1, 0]]
    assert mask.tolist() == [[True, True], [True, False]]


def test_crf_model_trains_saves_and_reloads(tiny_encoder, small_atis, tmp_path):
    config = train(
        TrainConfig(
            data=str(small_atis),
            out=str(tmp_path),
            encoder=str(tiny_encoder),
            epochs=1,
            batch_size=32,
            threads=1,
            crf=True,
            limit_train=96,
        )
    )
    artifacts = load_artifacts(tmp_path)
    assert artifacts.model.crf is not None and config["train"]["crf"] is True


def full_viterbi(em, start, end, trans):
    """The unpruned max-plus recursion: what the pruned one must give, ties included."""
    score, pointers = start + em[0], []
    for row in em[1:]:
        candidates = score[:, None] + trans
        pointers.append(candidates.argmax(axis=0))
        score = candidates.max(axis=0) + row
    path = [int((score + end).argmax())]
    for p in reversed(pointers):
        path.append(int(p[path[-1]]))
    return path[::-1]


@settings(max_examples=200, deadline=None)
@given(
    tags=st.integers(1, 40),
    words=st.integers(1, 12),
    peak=st.sampled_from([0.0, 3.0, 12.0]),
    ties=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_viterbi_equals_the_full_recursion(tags, words, peak, ties, seed):
    """Flat and peaked emissions (the argmax shortcut taken or not), wide and narrow
    transitions, and integer scores (ties)."""
    rng = np.random.default_rng(seed)
    em = rng.normal(size=(words, tags))
    em[np.arange(words), rng.integers(0, tags, words)] += peak
    trans = rng.normal(scale=rng.choice([0.5, 4.0]), size=(tags, tags))
    start, end = rng.normal(size=tags), rng.normal(size=tags)
    if ties:
        em, trans, start, end = (np.round(a) for a in (em, trans, start, end))
    assert viterbi(em, start, end, trans) == full_viterbi(em, start, end, trans)


def test_the_argmax_shortcut_needs_margins_above_the_transition_spread():
    trans = np.array([[0.0, -1.0], [-1.0, 0.0]])  # spread 1: margins above 2 settle a word
    start = end = np.zeros(2)
    peaked = np.array([[3.0, 0.0], [0.0, 2.5], [2.1, 0.0]])
    assert argmax_is_best(peaked, start, end, trans)
    assert viterbi(peaked, start, end, trans) == [0, 1, 0]
    narrow = np.array([[3.0, 0.0], [0.0, 1.5], [3.0, 0.0]])  # the middle word can flip
    assert not argmax_is_best(narrow, start, end, trans)
    assert viterbi(narrow, start, end, trans) == [0, 0, 0]
