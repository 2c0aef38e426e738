"""Start the real server as a subprocess on free 127.0.0.1 ports and talk to it for real."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client import NluClient
from service.process import ServerProcess


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    srv = ServerProcess.launch(
        tiny_bundle,
        log_path,
        "--intra-op-threads",
        "1",
        "--max-text-chars",
        "200",
        "--max-batch-items",
        "5",
        # No shedding on queued time: how long the queue takes depends on how busy the CPU is
        # (a 64-deep stream is over 100 ms of work beside another job), which no test may.
        "--max-queue-wait-ms",
        "0",
    )
    srv.wait_serving()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[NluClient]:
    c = NluClient(server.target)
    yield c
    c.close()
