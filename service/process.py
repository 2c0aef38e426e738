"""Run the server as a child process and wait until it serves: for benchmarks, tests and scripts
that need a real server on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx

from service.client import NluClient
from service.contract.paths import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    metrics_port: int
    log_path: Path
    http_port: int | None = None

    @classmethod
    def launch(
        cls,
        bundle: Path,
        log_path: Path,
        *flags: str,
        port: int | None = None,
        http: bool = False,
        env: dict[str, str] | None = None,
    ) -> ServerProcess:
        """Start `python -m service.server` on free ports (or gRPC on `port`, e.g. to restart
        where a killed server listened; with `http`, the HTTP front end too; `env` added to
        this process's environment); output goes to log_path."""
        port, metrics_port = port or free_port(), free_port()
        http_port = free_port() if http else None
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
            *(["--http-port", str(http_port)] if http_port else []),
            *flags,
        ]
        with log_path.open("w") as log_file:
            process = subprocess.Popen(
                cmd,
                cwd=PROJECT_ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            )
        return cls(process, port, metrics_port, log_path, http_port)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_serving(self, timeout_s: float = 120.0, target: str | None = None) -> list[str]:
        """Poll grpc.health.v1 (on `target`: a plaintext health-only port when the main one
        needs TLS) until SERVING; returns each distinct status seen, in order."""
        client = NluClient(target or self.target, timeout_s=1.0)
        seen: list[str] = []
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.log()}")
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
        self.process.kill()
        raise TimeoutError(f"server not SERVING after {timeout_s} s:\n{self.log()}")

    def metric(self, sample: str) -> float:
        """One sample's value from /metrics, e.g. `nlu_requests_total{code="OK",method="Parse"}`
        (0 when it has not appeared yet)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        lines = [ln for ln in text.splitlines() if ln.startswith(sample + " ")]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (graceful drain), then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)
