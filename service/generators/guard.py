"""The circuit breaker around any generator backend: once it has failed `breaker_failures` times
in a row, calls fail at once with `breaker_open` until one probe succeeds (a dead server or a
model that keeps timing out then costs nothing)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Self, TypeVar

from service.breaker import CircuitBreaker
from service.contract.prompt import Messages
from service.generators.base import GeneratorBackend, GeneratorError
from service.settings import GeneratorSettings

T = TypeVar("T")


class Guarded(GeneratorBackend):
    def __init__(self, inner: GeneratorBackend, breaker: CircuitBreaker) -> None:
        self.inner = inner
        self.breaker = breaker
        self.name, self.model = inner.name, inner.model

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> Self:
        raise TypeError("Guarded wraps a backend: use service.generators.registry.build_backend")

    @property
    def ready(self) -> bool:
        return self.inner.ready

    def load(self) -> None:
        self.inner.load()

    async def generate(self, messages: Messages, timeout_s: float) -> str:
        return await self._call(lambda: self.inner.generate(messages, timeout_s))

    async def score(self, messages: Messages, answers: list[str], timeout_s: float) -> list[float]:
        return await self._call(lambda: self.inner.score(messages, answers, timeout_s))

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise GeneratorError("breaker_open", "too many recent failures")
        try:
            result = await call()
        except GeneratorError as e:
            if e.backend_fault:
                self.breaker.record_failure()
            raise
        except Exception:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return result

    async def close(self) -> None:
        await self.inner.close()
