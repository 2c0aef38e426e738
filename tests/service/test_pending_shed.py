"""`max_pending_rpcs`: gRPC core refuses calls the event loop has not taken, without Python.
The server's loop is blocked on purpose (a handler that sleeps in it) while calls arrive."""

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
BLOCK_S = 1.5


def serve_blocking(
    settings: ServerSettings, started: threading.Event, done: threading.Event, port: list[int]
) -> None:
    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"block":
            time.sleep(BLOCK_S)  # the whole loop stops: no new call is taken from core
        return b"ok"

    async def main() -> None:
        server = grpc.aio.server(options=grpc_options(settings))
        methods = {"Call": grpc.unary_unary_rpc_method_handler(handler)}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", methods)])
        port.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        started.set()
        while not done.is_set():
            await asyncio.sleep(0.05)
        await server.stop(None)

    asyncio.run(main())


def codes_while_blocked(settings: ServerSettings) -> Counter:
    started, done, port = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=serve_blocking, args=(settings, started, done, port))
    thread.start()
    started.wait(10)
    with grpc.insecure_channel(f"127.0.0.1:{port[0]}") as channel:
        call = channel.unary_unary("/t.T/Call")
        call(b"warm", timeout=5)
        blocker = call.future(b"block", timeout=10)
        time.sleep(0.3)  # the blocker has reached its handler
        futures = [call.future(b"x", timeout=10) for _ in range(CALLS)]
        codes = Counter()
        for f in futures:
            try:
                f.result()
                codes["OK"] += 1
            except grpc.RpcError as e:
                codes[e.code().name] += 1
        assert blocker.result() == b"ok"
    done.set()
    thread.join()
    return codes


@pytest.mark.parametrize("limit", [0, 2])
def test_core_refuses_calls_beyond_the_pending_limit_while_python_is_busy(limit):
    codes = codes_while_blocked(ServerSettings(max_pending_rpcs=limit))
    assert sum(codes.values()) == CALLS
    if limit == 0:  # gRPC's default holds them all until the loop is back
        assert codes == {"OK": CALLS}
    else:  # one call matched an outstanding request, at most `limit` waited, core shed the rest
        assert codes["OK"] <= limit + 1 and codes["CANCELLED"] >= CALLS - limit - 1, codes
