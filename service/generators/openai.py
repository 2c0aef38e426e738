"""Any OpenAI-compatible `/v1/chat/completions` server (vLLM, TGI, llama.cpp, transformers serve).

Per-call timeout inside the caller's budget, bounded retries with backoff on transport errors and
5xx/429, at most `max_concurrency` calls in flight. The registry puts the circuit breaker around it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Self

import httpx

from service.contract.prompt import Messages
from service.generators.base import GeneratorBackend, GeneratorError
from service.settings import GeneratorSettings

RETRY_BACKOFF_S = 0.05


class OpenAIBackend(GeneratorBackend):
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_retries: int = 1,
        max_tokens: int = 160,
        max_concurrency: int = 4,
    ) -> None:
        self.model = model
        self.slots = asyncio.Semaphore(max_concurrency)
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers)

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> Self:
        key = settings.generator_api_key
        return cls(
            base_url=settings.generator_base_url,
            model=settings.generator_model,
            api_key=key.get_secret_value() if key else None,
            max_retries=settings.generator_max_retries,
            max_tokens=settings.generator_max_tokens,
            max_concurrency=settings.generator_max_concurrency,
        )

    ready = True  # nothing to load: the model lives in the remote server

    def load(self) -> None:
        """Nothing to load: the model lives in the remote server."""

    async def generate(self, messages: Messages, timeout_s: float) -> str:
        """At most `max_concurrency` calls in flight; a call that cannot get a slot within its
        budget fails with reason `busy` instead of piling onto a saturated server."""
        deadline = time.monotonic() + timeout_s
        try:
            await asyncio.wait_for(self.slots.acquire(), timeout_s)
        except TimeoutError as e:
            raise GeneratorError("busy", "every generator slot stayed in use") from e
        try:
            return await self._generate(messages, deadline)
        finally:
            self.slots.release()

    async def _generate(self, messages: Messages, deadline: float) -> str:
        timeout_s = deadline - time.monotonic()
        payload = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
        }
        reason, detail = "backend_error", ""
        for attempt in range(self.max_retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason, detail = "timeout", f"no time left after {attempt} attempts"
                break
            try:
                response = await self.client.post(
                    "/v1/chat/completions", json=payload, timeout=remaining
                )
            except httpx.TimeoutException:
                reason, detail = "timeout", f"no answer within {timeout_s:.2f} s"
                break
            except httpx.TransportError as e:
                reason, detail = "backend_error", f"{type(e).__name__}: {e}"
            else:
                if response.status_code == 200:
                    try:
                        text = response.json()["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError) as e:
                        reason, detail = "backend_error", f"unexpected response body: {e!r}"
                        break
                    return text or ""
                reason, detail = "backend_error", f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            await asyncio.sleep(
                min(RETRY_BACKOFF_S * 2**attempt, max(0.0, deadline - time.monotonic()))
            )
        raise GeneratorError(reason, detail)

    async def close(self) -> None:
        await self.client.aclose()
