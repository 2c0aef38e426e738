"""The client library and CLI against the real server: deadlines, retries that honour the
server's hint, the asyncio flavour, and `batch` over files larger than the server's limit."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest

from service import client as client_module
from service.client import AsyncNluClient, NluClient
from service.process import ServerProcess


def test_resource_exhausted_is_retried_after_the_hint_then_raised(tiny_bundle, tmp_path):
    srv = ServerProcess.launch(tiny_bundle, tmp_path / "log", "--max-queue-size", "2")
    try:
        srv.wait_serving()
        with NluClient(srv.target, timeout_s=20) as nlu:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                nlu.parse_batch(["list airlines"] * 3)  # never fits a queue of 2
            elapsed = time.monotonic() - started
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        refused = srv.metric('nlu_requests_total{code="RESOURCE_EXHAUSTED",method="ParseBatch"}')
        assert refused == 1 + client_module.RETRIES
        hint = client_module.retry_hint_s(err.value)
        assert hint is not None and elapsed >= client_module.RETRIES * hint
    finally:
        assert srv.stop() == 0


def test_the_asyncio_client_answers_as_the_blocking_one(server):
    texts = ["list airlines", "show me flights to denver"]

    async def calls():
        async with AsyncNluClient(server.target) as nlu:
            one = await nlu.parse(texts[0])
            batch = await nlu.parse_batch(texts)
            streamed = [r async for r in nlu.parse_stream(texts)]
            info = await nlu.info()
            return one, batch, streamed, info

    one, batch, streamed, info = asyncio.run(calls())
    with NluClient(server.target) as nlu:
        assert one.intent == nlu.parse(texts[0]).intent
        assert [r.intent for r in batch] == [r.intent for r in nlu.parse_batch(texts)]
    assert [r.request_id for r in streamed] == ["0", "1"]
    assert [r.intent for r in streamed] == [r.intent for r in batch]
    assert info.intents


def test_cli_batch_splits_past_the_server_limit_numbers_lines_and_names_blanks(
    server, tmp_path, capsys
):
    lines = ["list airlines", "", "show me flights to denver", "   "] + ["what is the fare"] * 9
    path = tmp_path / "utterances.txt"
    path.write_text("\n".join(lines) + "\n")
    # the fixture's server takes at most 5 per ParseBatch; 11 lines go in calls of 4
    argv = ["batch", str(path), "--batch-size", "4", "--target", server.target]
    assert client_module.main(argv) == 0
    out, err = capsys.readouterr()
    answers = [json.loads(line) for line in out.splitlines()]
    numbered = [n for n, t in enumerate(lines, start=1) if t.strip()]
    assert [a["request_id"] for a in answers] == [str(n) for n in numbered]
    assert all(a["intent"] for a in answers)
    assert "skipped 2 blank line(s): 2, 4" in err
