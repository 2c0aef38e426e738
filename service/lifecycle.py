"""Where the serving process stands, for every front end: loading (no core yet), serving or
draining; and how many nlu.v1 calls (gRPC or HTTP) are in flight, so a drain can wait for them
(health watches and reflection streams, which never end by themselves, are not counted: they
bypass the interceptor chain)."""

from __future__ import annotations

import asyncio
import contextlib

from service.core import NluCore
from service.errors import Unavailable


class Lifecycle:
    def __init__(self) -> None:
        self.core: NluCore | None = None
        self.draining = False  # set when a drain begins: readiness turns false at once
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def loaded(self) -> NluCore:
        """The core once loaded. A drain does not refuse work here: until the server stops
        (GOAWAY) every call that reaches it is answered, so callers that have not yet seen
        NOT_SERVING lose nothing."""
        if self.core is None:
            raise Unavailable("model is not loaded yet")
        return self.core

    @property
    def ready(self) -> bool:
        """Loaded and not draining: what gRPC health SERVING and HTTP /readyz 200 mean."""
        return self.core is not None and not self.draining

    def rpc_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def rpc_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def idle(self, timeout_s: float) -> None:
        """Until no nlu.v1 RPC is in flight, at most `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout_s))
