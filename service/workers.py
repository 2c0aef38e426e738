"""Several server processes on one port: a supervisor and its workers (`workers > 1`).

One server process answers with one event loop under one GIL: protocol work, tokenisation and
decoding take turns with each other and with admitting or refusing calls, however many cores the
model leaves idle. With `workers` N this process serves nothing itself. It starts N copies of
the server (`python -m service.server`, its own flags plus `--workers 1 --reuse-port`), each with
its own engine, batching queue and event loop; they bind the gRPC, HTTP and health ports with
SO_REUSEPORT and the kernel hands each new connection to one of them (grpc's multiprocessing
example does the same). Measured in benchmarks/README.md ("Worker processes").

- Start: a worker binds the shared ports only once its model is loaded (a connection never
  lands on one that cannot answer yet, at start or after a restart) and writes to a pipe once
  it reports SERVING; a worker that exits before that fails the start with its exit code (its
  own message is on the shared stderr).
- Metrics: the workers write prometheus_client's multiprocess files into a private folder; this
  process serves their sum on `metrics_port`.
- A worker that dies later is restarted, at most one start a second, and logged.
- SIGTERM/SIGINT: forwarded to every worker, each drains as a lone server does; the exit code is
  0 once all of them exited 0.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from service import metrics
from service.cpus import usable_cpus
from service.errors import StartupError
from service.settings import Settings, setting_label

log = logging.getLogger("service.workers")
READY_FD = "NLU_WORKER_READY_FD"  # the pipe a worker writes to once SERVING
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when imported
RESTART_INTERVAL_S = 1.0
POLL_S = 0.1


def notify_ready() -> None:
    """Tell the supervisor, if any, that this worker serves (a no-op for a lone server)."""
    fd = os.environ.pop(READY_FD, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except OSError:  # the supervisor has gone: it will not wait for this
        pass


def worker_flags(settings: Settings) -> list[str]:
    """Flags appended to the supervisor's own for each worker: one process, the shared ports,
    no /metrics of its own, and an even share of what is sized per process when unset."""
    workers = settings.server.workers
    flags = ["--workers", "1", "--reuse-port", "--metrics-port", "0"]
    if not settings.engine.intra_op_threads:
        flags += ["--intra-op-threads", str(max(1, usable_cpus() // workers))]
    limit = settings.limits.concurrent_rpcs_limit
    if settings.limits.max_concurrent_rpcs is None and limit is not None:
        flags += ["--max-concurrent-rpcs", str(max(1, limit // workers))]
    return flags


def check_ports_free(settings: Settings) -> None:
    """A StartupError naming the setting when a port is taken: the workers' SO_REUSEPORT would
    otherwise share it with whatever holds it (another server of the same user)."""
    host = settings.server.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ports = {
        "port": settings.server.port,
        "http_port": settings.http.http_port,
        "health_port": settings.server.health_port or None,
    }
    for name, port in ports.items():
        if port is None:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError as e:
                raise StartupError(
                    f"{setting_label(name)} {port}: cannot listen on {host}:{port} ({e.strerror})"
                ) from None


@dataclass
class Worker:
    index: int
    process: subprocess.Popen
    ready_fd: int  # read end of the worker's ready pipe
    ready: bool = False
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def spawn(cls, index: int, argv: list[str], env: dict[str, str]) -> Worker:
        read, write = os.pipe()
        process = subprocess.Popen(
            [sys.executable, "-m", "service.server", *argv],
            env={**env, READY_FD: str(write)},
            pass_fds=(write,),
        )
        os.close(write)
        log.info("worker started", extra={"worker": index, "pid": process.pid})
        return cls(index, process, read)

    def read_ready(self) -> None:
        if os.read(self.ready_fd, 64):
            self.ready = True
            log.info("worker serving", extra={"worker": self.index, "pid": self.process.pid})

    def close(self) -> None:
        os.close(self.ready_fd)


class Supervisor:
    def __init__(self, settings: Settings, argv: list[str], metrics_dir: str) -> None:
        self.settings = settings
        self.argv = [*argv, *worker_flags(settings)]
        self.metrics_dir = metrics_dir
        self.env = {**os.environ, MULTIPROC_DIR: metrics_dir}
        self.stop = threading.Event()
        self.workers: list[Worker] = []
        self.last_restart = 0.0

    def watch_ready(self, timeout_s: float) -> None:
        """Read whichever ready pipes have something to say within `timeout_s`."""
        waiting = {w.ready_fd: w for w in self.workers if not w.ready}
        if not waiting:
            self.stop.wait(timeout_s)
            return
        try:
            readable, _, _ = select.select(list(waiting), [], [], timeout_s)
        except InterruptedError:
            return
        for fd in readable:
            waiting[fd].read_ready()

    def start(self) -> int | None:
        """Every worker SERVING: None; else the exit code of the first that failed to start
        (the others are stopped)."""
        self.workers = [
            Worker.spawn(i, self.argv, self.env) for i in range(self.settings.server.workers)
        ]
        while not self.stop.is_set() and not all(w.ready for w in self.workers):
            self.watch_ready(POLL_S)
            for worker in self.workers:
                code = worker.process.poll()
                if code is not None and not worker.ready:
                    log.error(
                        "worker failed to start", extra={"worker": worker.index, "code": code}
                    )
                    self.shutdown()
                    return code or 1
        if all(w.ready for w in self.workers):
            log.info("serving", extra={"workers": len(self.workers)})
        return None

    def keep_up(self) -> None:
        """Until told to stop: restart workers that die, at most one start a second."""
        while not self.stop.is_set():
            self.watch_ready(POLL_S)
            for i, worker in enumerate(self.workers):
                code = worker.process.poll()
                if code is None or self.stop.is_set():
                    continue
                if time.monotonic() - self.last_restart < RESTART_INTERVAL_S:
                    continue
                log.error(
                    "worker exited; restarting it",
                    extra={"worker": worker.index, "pid": worker.process.pid, "code": code},
                )
                mark_process_dead(worker.process.pid, self.metrics_dir)
                worker.close()
                self.last_restart = time.monotonic()
                self.workers[i] = Worker.spawn(worker.index, self.argv, self.env)

    def shutdown(self) -> int:
        """SIGTERM to every worker still running (each drains), then wait for all: 0 when
        every worker exited 0."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        grace_s = self.settings.server.drain_grace_s + self.settings.server.drain_notice_s + 30
        codes = []
        for worker in self.workers:
            try:
                codes.append(worker.process.wait(timeout=grace_s))
            except subprocess.TimeoutExpired:
                log.error("worker did not drain; killed", extra={"worker": worker.index})
                worker.process.kill()
                codes.append(worker.process.wait())
            worker.close()
        log.info("stopped", extra={"exit_codes": codes})
        return 0 if all(code == 0 for code in codes) else 1

    def run(self) -> int:
        failed = self.start()
        if failed is not None:
            return failed
        self.keep_up()
        return self.shutdown()


def supervise(settings: Settings, argv: list[str]) -> int:
    """Run `settings.server.workers` workers until SIGTERM/SIGINT; the exit code."""
    check_ports_free(settings)
    with tempfile.TemporaryDirectory(prefix="nlu-metrics-") as metrics_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=metrics_dir)
        port = settings.observability.metrics_port
        try:
            metrics.serve_metrics(port, registry)
        except OSError as e:
            raise StartupError(
                f"{setting_label('metrics_port')} {port}: cannot listen ({e.strerror})"
            ) from None
        supervisor = Supervisor(settings, argv, metrics_dir)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: supervisor.stop.set())
        return supervisor.run()
