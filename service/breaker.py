"""A circuit breaker for the generator backend: after N consecutive failures stop calling it for
a while, then let one probe through (half-open); its outcome closes or re-opens the circuit."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        reset_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self.clock = clock
        self.state = State.CLOSED
        self.failures = 0
        self.opened_at = 0.0

    def allow(self) -> bool:
        """May a call go out now? In half-open state only the one probe may."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN and self.clock() - self.opened_at >= self.reset_after_s:
            self.state = State.HALF_OPEN
            return True
        return False

    def record_success(self) -> None:
        self.state = State.CLOSED
        self.failures = 0

    def record_failure(self) -> None:
        self.failures += 1
        if self.state is State.HALF_OPEN or self.failures >= self.failure_threshold:
            self.state = State.OPEN
            self.opened_at = self.clock()
