from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export.artifacts import load_artifacts
from export.inference import predicted_tags, run_model
from service.contract.graph import OUTPUTS, onnx_feeds
from service.contract.text import split_words
from service.runtime import Engine, select_providers
from service.settings import EngineSettings
from tests.conftest import SHARED_ATIS

UTTERANCES = [
    "show me flights from boston to denver",
    "what is the cheapest fare from pittsburgh to atlanta on monday",
    "list airlines",
    "i need a flight tomorrow morning from  dallas to san francisco please",
    " ".join(["flights from boston to denver"] * 30),  # 150 words, past max_seq_len
]


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    return Engine(tiny_bundle, settings=EngineSettings(variant="fp32", intra_op_threads=1))


def test_runtime_matches_pytorch(engine, tiny_model):
    artifacts = load_artifacts(tiny_model)
    outputs = run_model(artifacts.model, artifacts.tokenizer, [split_words(u) for u in UTTERANCES])
    frames = engine.parse(UTTERANCES, top_k=3)
    for i, frame in enumerate(frames):
        expected_intent = artifacts.labels.intents[int(outputs.intent_logits[i].argmax())]
        assert frame.intent == expected_intent
        assert frame.word_tags == predicted_tags(
            outputs.word_logits[i], artifacts.labels, outputs.crf
        )
        probs = np.exp(outputs.intent_logits[i] / engine.bundle.config.temperature)
        assert frame.confidence == pytest.approx(probs.max() / probs.sum(), rel=1e-4)
    assert frames[-1].truncated_words > 0
    assert set(frames[-1].word_tags[-frames[-1].truncated_words :]) == {"O"}


def test_frames_are_well_formed(engine):
    for frame in engine.parse(UTTERANCES, top_k=2):
        assert len(frame.top_intents) == 2
        assert frame.top_intents[0].probability >= frame.top_intents[1].probability
        assert 0 < frame.confidence <= 1
        assert frame.embedding.shape == (32,)
        assert np.linalg.norm(frame.embedding) == pytest.approx(1.0, abs=1e-4)
        for slot in frame.slots:
            assert frame.text[slot.start : slot.end] == slot.value
            assert 0 < slot.confidence <= 1


def test_int8_variant_loads_and_answers(tiny_bundle):
    int8 = Engine(tiny_bundle, settings=EngineSettings(variant="int8", intra_op_threads=1))
    frames = int8.parse(["list airlines"])
    assert frames[0].intent in int8.bundle.labels.intents
    assert int8.providers == ["CPUExecutionProvider"]


def test_cuda_request_falls_back_to_cpu_with_a_warning(caplog, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING):
        assert select_providers("cuda") == ["CPUExecutionProvider"]
    assert "falling back to CPU" in caplog.text


def test_cuda_is_used_when_onnxruntime_offers_it(monkeypatch):
    offered = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: offered)
    assert select_providers("cuda") == offered
    assert select_providers("cpu") == ["CPUExecutionProvider"]


ZERO_WIDTH = ["\ufeff", "\u200b", "\u200c", "\u200d", "\u2060"]
BASE_UTTERANCES = [
    "show me flights from boston to denver tomorrow morning",
    "what is the cheapest fare from pittsburgh to atlanta on monday",
    "i need a flight tomorrow morning from dallas to san francisco please",
]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_words_that_yield_no_tokens_do_not_move_any_slot(engine, data):
    """A zero-width character between words (a word of its own that tokenises to nothing) must
    leave every other word's tag, and so every slot, as it was."""
    text = data.draw(st.sampled_from(BASE_UTTERANCES))
    words = text.split()
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(words)))
        words.insert(at, data.draw(st.sampled_from(ZERO_WIDTH)))
    noisy = " ".join(words)
    (plain,), (with_noise,) = engine.parse([text]), engine.parse([noisy])
    assert [(s.name, s.value) for s in with_noise.slots] == [(s.name, s.value) for s in plain.slots]
    assert all(noisy[s.start : s.end] == s.value for s in with_noise.slots)
    kept = [
        t for w, t in zip(noisy.split(), with_noise.word_tags, strict=True) if w not in ZERO_WIDTH
    ]
    assert kept == plain.word_tags
    assert with_noise.min_tag_confidence == pytest.approx(plain.min_tag_confidence)


@pytest.mark.parametrize("threads", [1, 2])
def test_int8_answers_do_not_depend_on_their_batch_mates(tiny_bundle, threads):
    """Dynamic int8 computes activation scales over the whole batch: with one long utterance
    beside short ones, batched answers used to differ from the same utterances alone. With two
    threads the batch runs on two single-threaded instances and a lone utterance on the solo
    session, which has both threads."""
    int8 = Engine(tiny_bundle, settings=EngineSettings(variant="int8", intra_op_threads=threads))
    assert (int8.solo is not None) == (threads > 1)
    lines = (SHARED_ATIS / "test" / "seq.in").read_text().splitlines()[:31]
    texts = [line.strip() for line in lines] + [UTTERANCES[-1]]  # the 150-word one
    batched = int8.parse(texts, top_k=5)
    for text, together in zip(texts, batched, strict=True):
        (alone,) = int8.parse([text], top_k=5)
        assert together.intent == alone.intent and together.word_tags == alone.word_tags
        assert [s.label for s in together.top_intents] == [s.label for s in alone.top_intents]
        assert together.confidence == pytest.approx(alone.confidence, abs=1e-3)


def test_the_solo_session_is_int8_only_and_can_be_turned_off(tiny_bundle):
    def solo(**settings) -> bool:
        engine = Engine(tiny_bundle, settings=EngineSettings(intra_op_threads=2, **settings))
        return engine.solo is not None

    assert solo(variant="int8")
    assert not solo(variant="int8", solo_session=False)
    assert not solo(variant="int8", instances=1)  # one instance already has every thread
    assert not solo(variant="fp32")  # batched on one session with every thread


def test_fp32_batches_run_by_length_give_each_answer_the_full_batch_gives(tiny_bundle):
    """Length groups cut the padding, not the answers: every output at a real token equals the
    one-shot run of the whole padded batch, in the batch's order."""
    fp32 = Engine(tiny_bundle, settings=EngineSettings(variant="fp32", intra_op_threads=1))
    lines = (SHARED_ATIS / "test" / "seq.in").read_text().splitlines()[:29]
    texts = [line.strip() for line in lines] + [UTTERANCES[-1]]  # 30: groups of 8, a long one
    enc = fp32.encode(texts)
    grouped = fp32.infer(enc)
    whole = fp32.sessions[0].run(list(OUTPUTS), onnx_feeds(enc, fp32.bundle.config.inputs))
    np.testing.assert_allclose(grouped.intent_logits, whole[0], atol=1e-4)
    np.testing.assert_allclose(grouped.embedding, whole[2], atol=1e-4)
    mask = enc.attention_mask.astype(bool)  # (B, T): real tokens
    np.testing.assert_allclose(grouped.slot_logits[mask], whole[1][mask], atol=1e-4)
