"""`max_pending_rpcs`: gRPC core refuses calls the event loop has not taken, without Python.
The server's loop is blocked on purpose (a handler that waits in it) while calls arrive; the
test releases it once the outcome is settled, so nothing depends on the machine's speed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import grpc
import pytest

from service.grpc_api.server import grpc_options
from service.settings import ServerSettings

CALLS = 20
DEADLINE_S = 120.0


class Blocking:
    """A server whose `block` call holds its event loop until `released` is set."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.started, self.blocking = threading.Event(), threading.Event()
        self.released, self.done = threading.Event(), threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=asyncio.run, args=(self.main(),))

    async def handler(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"block":
            self.blocking.set()
            self.released.wait(DEADLINE_S)  # the whole loop stops: no call is taken from core
        return b"ok"

    async def main(self) -> None:
        server = grpc.aio.server(options=grpc_options(self.settings))
        methods = {"Call": grpc.unary_unary_rpc_method_handler(self.handler)}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", methods)])
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.started.set()
        while not self.done.is_set():
            await asyncio.sleep(0.05)
        await server.stop(None)


def wait_until(condition) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def codes_while_blocked(settings: ServerSettings, settled) -> Counter:
    """Codes of CALLS calls sent while the loop is blocked; it is released once `settled`
    (given the futures) holds."""
    server = Blocking(settings)
    server.thread.start()
    assert server.started.wait(DEADLINE_S)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = channel.unary_unary("/t.T/Call")
            call(b"warm", timeout=DEADLINE_S)
            blocker = call.future(b"block", timeout=DEADLINE_S)
            assert server.blocking.wait(DEADLINE_S)
            futures = [call.future(b"x", timeout=DEADLINE_S) for _ in range(CALLS)]
            wait_until(lambda: settled(futures))
            server.released.set()
            codes = Counter()
            for f in futures:
                try:
                    f.result()
                    codes["OK"] += 1
                except grpc.RpcError as e:
                    codes[e.code().name] += 1
            assert blocker.result() == b"ok"
    finally:
        server.released.set()
        server.done.set()
        server.thread.join()
    return codes


@pytest.mark.parametrize("limit", [0, 2])
def test_core_refuses_calls_beyond_the_pending_limit_while_python_is_busy(limit):
    refused = CALLS - limit - 1  # one call matches an outstanding request, `limit` may wait

    def settled(futures) -> bool:  # without a limit nothing ends while the loop is blocked
        return limit == 0 or sum(f.done() for f in futures) >= refused

    codes = codes_while_blocked(ServerSettings(max_pending_rpcs=limit), settled)
    assert sum(codes.values()) == CALLS
    if limit == 0:  # gRPC's default holds them all until the loop is back
        assert codes == {"OK": CALLS}
    else:  # core shed the rest
        assert codes["OK"] <= limit + 1 and codes["CANCELLED"] >= refused, codes
