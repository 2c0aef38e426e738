"""What every generator backend offers the router."""

from __future__ import annotations

from abc import ABC, abstractmethod

Messages = list[dict[str, str]]


class GeneratorError(Exception):
    """The backend gave no usable text; `reason` is the metric/fallback label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class GeneratorBackend(ABC):
    name: str
    model: str

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
