"""Where the serving process stands: loading (no core yet), serving, or draining; and how many
RPCs are in flight, so a drain can wait for them."""

from __future__ import annotations

import asyncio
import contextlib
import time

from service.core import NluCore
from service.errors import Unavailable


class Lifecycle:
    def __init__(self) -> None:
        self.core: NluCore | None = None
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def loaded(self) -> NluCore:
        """The core once loaded (info stays available while draining)."""
        if self.core is None:
            raise Unavailable("model is not loaded yet")
        return self.core

    def accepting(self) -> NluCore:
        """The core, if new work is accepted."""
        if self.draining:
            raise Unavailable("draining")
        return self.loaded()

    def rpc_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def rpc_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, notice_s: float, grace_s: float) -> float:
        """Refuse new work (UNAVAILABLE) while the port stays open for at least `notice_s`, so
        health checks and load balancers see NOT_SERVING, and until the RPCs in flight finish;
        never longer than `grace_s`. Returns the grace left for closing the server."""
        started = time.monotonic()
        self.draining = True
        await asyncio.sleep(min(notice_s, grace_s))
        remaining = grace_s - (time.monotonic() - started)
        if remaining > 0:
            with contextlib.suppress(TimeoutError):  # stop() cancels what still runs
                await asyncio.wait_for(self._idle.wait(), remaining)
        return max(0.0, grace_s - (time.monotonic() - started))
