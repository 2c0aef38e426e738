"""The shipped client config against real servers: calls spread over every address of the
target, a draining server leaves the rotation at once, and no call fails while it stops."""

from __future__ import annotations

import signal
import time

from service.client import NluClient
from service.process import ServerProcess

PARSED = 'nlu_requests_total{code="OK",method="Parse"}'


def test_calls_spread_over_every_server_and_avoid_a_draining_one(tiny_bundle, tmp_path):
    servers = [
        ServerProcess.launch(
            tiny_bundle, tmp_path / f"log{i}", "--drain-notice-s", "30", "--drain-grace-s", "60"
        )
        for i in range(2)
    ]
    for server in servers:
        server.wait_serving()
    client = NluClient("ipv4:" + ",".join(s.target for s in servers), timeout_s=30)
    try:
        for _ in range(20):
            assert client.parse("list airlines").intent
        assert all(s.metric(PARSED) > 0 for s in servers)  # round_robin, not pick_first
        draining, other = servers
        draining.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20  # until the client's health watch has seen the drain
        while time.monotonic() < deadline:
            seen = draining.metric(PARSED)
            for _ in range(10):
                assert client.parse("list airlines").intent
            if draining.metric(PARSED) == seen:
                break
        before = draining.metric(PARSED), other.metric(PARSED)
        for _ in range(20):
            assert client.parse("list airlines").intent
        assert draining.metric(PARSED) == before[0]  # out of rotation while still answering
        assert other.metric(PARSED) == before[1] + 20
        assert draining.process.wait(timeout=120) == 0
        for _ in range(5):  # the stopped one is gone: nothing fails
            assert client.parse("list airlines").intent
    finally:
        client.close()
        for server in servers:
            server.stop()
