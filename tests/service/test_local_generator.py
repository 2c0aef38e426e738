"""The in-process generator: a tiny random causal LM for the mechanics, the real SmolLM2 once."""

from __future__ import annotations

import asyncio

import pytest

from service.generators.base import GeneratorError
from service.generators.local import LocalBackend, common_prefix_length

MESSAGES = [
    {"role": "system", "content": 'Answer with JSON {"intent": ...}. Intents: atis_flight'},
    {"role": "user", "content": 'Utterance: "show me flights to denver"'},
]


def test_tiny_lm_generates_within_its_budget(tiny_lm):
    backend = LocalBackend(model=str(tiny_lm), threads=1, max_new_tokens=8)
    backend.load()
    text = asyncio.run(backend.generate(MESSAGES, timeout_s=30.0))
    assert isinstance(text, str)
    asyncio.run(backend.close())


def test_a_call_whose_deadline_passes_while_queued_is_not_run(tiny_lm):
    backend = LocalBackend(model=str(tiny_lm), threads=1, max_new_tokens=8)
    backend.load()
    with pytest.raises(GeneratorError) as err:
        asyncio.run(backend.generate(MESSAGES, timeout_s=1e-6))
    assert err.value.reason == "timeout"


def test_generate_before_load_is_a_generator_error():
    backend = LocalBackend(model="unused", threads=1, max_new_tokens=8)
    with pytest.raises(GeneratorError, match="not_loaded"):
        asyncio.run(backend.generate(MESSAGES, 1.0))


@pytest.mark.slow
def test_real_smollm2_answers():
    backend = LocalBackend(model="", threads=1, max_new_tokens=24)
    assert backend.model.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    backend.load()
    text = asyncio.run(backend.generate(MESSAGES, timeout_s=60.0))
    assert text.strip()


def full_sequence_logprob(backend: LocalBackend, messages, answer: str, start: int) -> float:
    """Reference: log-likelihood of the answer's tokens from position `start` on (where the
    candidates start to differ), from one uncached forward pass."""
    import torch

    ids = backend._prompt_ids(messages, answer)
    with torch.inference_mode():
        logits = backend.lm(input_ids=torch.tensor([ids])).logits[0]  # (T, V)
    logp = logits.log_softmax(-1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


def test_scores_match_an_uncached_forward_pass(tiny_lm):
    backend = LocalBackend(model=str(tiny_lm), threads=1, max_new_tokens=8)
    backend.load()
    answers = ['{"intent": "atis_flight",', '{"intent": "atis_airfare",', '{"intent": "x",']
    for _ in range(2):  # the second call reuses the cached system turn
        scores = asyncio.run(backend.score(MESSAGES, answers, timeout_s=30.0))
        shared = common_prefix_length([backend._prompt_ids(MESSAGES, a) for a in answers])
        expected = [full_sequence_logprob(backend, MESSAGES, a, shared) for a in answers]
        assert scores == pytest.approx(expected, abs=1e-3)
    assert len(backend.prefix_cache) == 1


def test_generation_is_the_same_with_the_cached_system_turn(tiny_lm):
    backend = LocalBackend(model=str(tiny_lm), threads=1, max_new_tokens=8)
    backend.load()
    first = asyncio.run(backend.generate(MESSAGES, timeout_s=30.0))  # fills the cache
    assert asyncio.run(backend.generate(MESSAGES, timeout_s=30.0)) == first
    backend.prefix_cache.clear()
    assert asyncio.run(backend.generate(MESSAGES, timeout_s=30.0)) == first
