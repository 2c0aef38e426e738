"""The in-process generator: a tiny random causal LM for the mechanics, the real SmolLM2 once."""

from __future__ import annotations

import asyncio

import pytest

from service.generators.base import GeneratorError
from service.generators.local import LocalBackend

MESSAGES = [
    {"role": "system", "content": 'Answer with JSON {"intent": ...}. Intents: atis_flight'},
    {"role": "user", "content": 'Utterance: "show me flights to denver"'},
]


def test_tiny_lm_generates_within_its_budget(tiny_lm):
    backend = LocalBackend(str(tiny_lm), None, threads=1, max_new_tokens=8)
    backend.load()
    text = asyncio.run(backend.generate(MESSAGES, timeout_s=30.0))
    assert isinstance(text, str)
    asyncio.run(backend.close())


def test_a_call_whose_deadline_passes_while_queued_is_not_run(tiny_lm):
    backend = LocalBackend(str(tiny_lm), None, threads=1, max_new_tokens=8)
    backend.load()
    with pytest.raises(GeneratorError) as err:
        asyncio.run(backend.generate(MESSAGES, timeout_s=1e-6))
    assert err.value.reason == "timeout"


def test_generate_before_load_is_a_generator_error():
    backend = LocalBackend("unused", None, threads=1, max_new_tokens=8)
    with pytest.raises(GeneratorError, match="not_loaded"):
        asyncio.run(backend.generate(MESSAGES, 1.0))


def test_real_smollm2_answers():
    backend = LocalBackend("", None, threads=1, max_new_tokens=24)
    assert backend.model.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    backend.load()
    text = asyncio.run(backend.generate(MESSAGES, timeout_s=60.0))
    assert text.strip()
