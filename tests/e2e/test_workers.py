"""`--workers 2`: a supervisor and two server processes sharing the ports (service.workers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.client import NluClient
from service.contract.paths import PROJECT_ROOT
from service.process import ServerProcess, free_port

UTTERANCE = "show me flights from boston to denver"


def workers_of(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def wait_for(condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def exited(pid: int) -> bool:
    """Gone, or a zombie: its sockets are closed, so the kernel hands it no more connections."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def parse_on_new_connections(server: ServerProcess, calls: int) -> list[str]:
    """Each call on its own channel: the kernel spreads connections, not calls."""
    intents = []
    for _ in range(calls):
        client = NluClient(server.target)
        try:
            intents.append(client.parse(UTTERANCE).intent)
        finally:
            client.close()
    return intents


@pytest.fixture(scope="module")
def supervised(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    log_path = tmp_path_factory.mktemp("workers") / "server.log"
    server = ServerProcess.launch(tiny_bundle, log_path, "--workers", "2", http=True)
    server.wait_serving()
    wait_for(lambda: server.log().count('"msg": "worker serving"') == 2)
    yield server
    server.stop()


def test_workers_share_the_ports_and_sum_their_metrics(supervised: ServerProcess):
    pids = workers_of(supervised.process.pid)
    assert len(pids) == 2
    intents = parse_on_new_connections(supervised, 12)
    assert len(set(intents)) == 1
    reply = httpx.post(f"{supervised.http_url}/v1/parse", json={"text": UTTERANCE}, timeout=10)
    assert reply.status_code == 200 and reply.json()["intent"] == intents[0]
    # Counted as each call ends, which may be just after its answer reached the client.
    grpc_ok = 'nlu_requests_total{code="OK",method="Parse"}'
    http_ok = 'nlu_requests_total{code="200",method="POST /v1/parse"}'
    wait_for(lambda: supervised.metric(grpc_ok) >= 12 and supervised.metric(http_ok) >= 1)
    assert supervised.metric(grpc_ok) == 12 and supervised.metric(http_ok) == 1


def test_a_dead_worker_is_replaced_while_the_other_serves(supervised: ServerProcess):
    before = workers_of(supervised.process.pid)
    os.kill(before[0], signal.SIGKILL)
    # until it has exited, a connection can still land in its accept queue and be reset
    wait_for(lambda: exited(before[0]) or before[0] not in workers_of(supervised.process.pid))
    assert len(set(parse_on_new_connections(supervised, 4))) == 1  # the survivor answers
    wait_for(lambda: supervised.log().count('"msg": "worker serving"') == 3)
    after = workers_of(supervised.process.pid)
    assert len(after) == 2 and before[0] not in after and before[1] in after
    assert '"msg": "worker exited; restarting it"' in supervised.log()


def test_sigterm_drains_every_worker_and_exits_0(tiny_bundle: Path, tmp_path: Path):
    server = ServerProcess.launch(tiny_bundle, tmp_path / "server.log", "--workers", "2")
    server.wait_serving()
    wait_for(lambda: server.log().count('"msg": "worker serving"') == 2)
    pids = workers_of(server.process.pid)
    assert server.stop() == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert server.log().count('"msg": "stopped"') == 3  # each worker, then the supervisor


def run_server(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.server", *flags],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_taken_port_is_named_before_any_worker_starts(tiny_bundle: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_server(
            "--bundle", str(tiny_bundle), "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", "0", "--workers", "2",
        )  # fmt: skip
    assert run.returncode == 1
    assert f"port (NLU_PORT, --port) {port}: cannot listen" in run.stderr
    assert "worker started" not in run.stderr


def test_workers_need_fixed_ports(tiny_bundle: Path):
    run = run_server("--bundle", str(tiny_bundle), "--port", "0", "--workers", "2")
    assert run.returncode == 2
    assert "workers > 1 needs a fixed port" in run.stderr


def test_a_worker_that_cannot_start_fails_the_start(tmp_path: Path):
    run = run_server(
        "--bundle", str(tmp_path / "missing"), "--host", "127.0.0.1",
        "--port", str(free_port()), "--metrics-port", "0", "--workers", "2",
    )  # fmt: skip
    assert run.returncode == 1
    assert "cannot serve" in run.stderr and '"msg": "worker failed to start"' in run.stderr
