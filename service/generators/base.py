"""What every generator backend offers the router."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

from service.contract.prompt import Messages
from service.settings import GeneratorSettings

CALLER_REASONS = frozenset({"busy", "unsupported", "bad_candidates", "breaker_open"})
"""Failures that say nothing about the backend's health (so they never open the breaker)."""


class GeneratorError(Exception):
    """The backend gave no usable text; `reason` is the metric/fallback label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason

    @property
    def backend_fault(self) -> bool:
        return self.reason not in CALLER_REASONS


class GeneratorBackend(ABC):
    name: str
    model: str
    ready: bool = False
    """True once `load()` has returned: the server serves the encoder before that."""

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: GeneratorSettings) -> Self:
        """The backend as the settings describe it (the registry's constructor)."""

    @abstractmethod
    def load(self) -> None:
        """Prepare to answer (may take seconds; the server calls it off the event loop)."""

    @abstractmethod
    async def generate(self, messages: Messages, timeout_s: float) -> str:
        """The assistant's reply to a chat, within timeout_s, or GeneratorError."""

    async def score(self, messages: Messages, answers: list[str], timeout_s: float) -> list[float]:
        """Log-likelihood of each candidate start of the assistant's reply (the scoring mode).

        Only an in-process model exposes its token probabilities; HTTP backends do not."""
        raise GeneratorError("unsupported", f"the {self.name} backend cannot score answers")

    @abstractmethod
    async def close(self) -> None:
        """Release connections or models."""
