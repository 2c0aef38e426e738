"""A peer server as a child process in its own virtual environment (`make peer-venvs`), ready
once its model answers KServe v2 `ModelReady` (not the server's health: Triton is healthy
seconds before the model has loaded)."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from service.contract.paths import PROJECT_ROOT
from service.process import free_port


@dataclass(frozen=True)
class Peer:
    name: str
    venv: str  # relative to the project root
    module: str
    package: str  # whose version the result records

    @property
    def python(self) -> Path:
        return PROJECT_ROOT / self.venv / "bin" / "python"

    def version(self) -> str:
        code = f"from importlib.metadata import version; print(version({self.package!r}))"
        run = subprocess.run([self.python, "-c", code], capture_output=True, text=True, check=True)
        return run.stdout.strip()

    def launch(self, bundle: Path, log_path: Path, *flags: str) -> PeerProcess:
        grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
        cmd = [
            str(self.python), "-m", self.module, "--bundle", str(bundle.resolve()),
            "--grpc-port", str(grpc_port), "--http-port", str(http_port),
            "--metrics-port", str(metrics_port), *flags,
        ]  # fmt: skip
        with log_path.open("w") as log:
            process = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
        return PeerProcess(self, process, grpc_port, log_path)


TRITON = Peer("triton", ".venv-triton", "benchmarks.peers.triton_server", "nvidia-pytriton")
MLSERVER = Peer("mlserver", ".venv-mlserver", "benchmarks.peers.mlserver_runtime", "mlserver")
PEERS = (TRITON, MLSERVER)


@dataclass
class PeerProcess:
    peer: Peer
    process: subprocess.Popen
    grpc_port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        """Seconds until the model answered ModelReady true."""
        from benchmarks.gen.inference import predict_v2_pb2 as pb
        from benchmarks.gen.inference import predict_v2_pb2_grpc as pb_grpc

        started = time.monotonic()
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while time.monotonic() - started < timeout_s:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.peer.name} exited:\n{self.log_path.read_text()}")
                try:
                    if stub.ModelReady(pb.ModelReadyRequest(name="nlu"), timeout=1).ready:
                        return time.monotonic() - started
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.process.kill()
        raise TimeoutError(f"{self.peer.name} not ready in {timeout_s} s: {self.log_path}")

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
