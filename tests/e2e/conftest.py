"""Start the real server as a subprocess on free 127.0.0.1 ports and talk to it for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from service.client import NluClient

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    metrics_port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def launch(bundle: Path, log_path: Path, *flags: str) -> Server:
    port, metrics_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "service.server",
        "--bundle",
        str(bundle),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--intra-op-threads",
        "1",
        *flags,
    ]
    process = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return Server(process, port, metrics_port, log_path)


def wait_serving(server: Server, timeout_s: float = 60.0) -> list[str]:
    """Poll health until SERVING; returns every status seen (connection failures skipped)."""
    client = NluClient(server.target, timeout_s=1.0)
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.log()}")
            try:
                status = client.health()
            except grpc.RpcError:
                time.sleep(0.02)
                continue
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == "SERVING":
                return seen
            time.sleep(0.02)
    finally:
        client.close()
    raise TimeoutError(f"server not SERVING after {timeout_s} s:\n{server.log()}")


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    srv = launch(tiny_bundle, log_path, "--max-text-chars", "200", "--max-batch-items", "5")
    wait_serving(srv)
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[NluClient]:
    c = NluClient(server.target)
    yield c
    c.close()
