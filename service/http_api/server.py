"""The HTTP front end's server: uvicorn on a socket bound here (so a port taken is a StartupError
naming `http_port`, and port 0 is known at once), run as a task of the gRPC server's event loop
(one process, one core, one batching queue). TLS from the same files as gRPC; unlike gRPC's,
uvicorn reads them once, so a rotated certificate reaches HTTP at the next restart."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from service.errors import StartupError
from service.settings import Settings, setting_label


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the process owns SIGTERM and drains every front
    end in order (uvicorn's would re-raise the signal once it stops)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        server = settings.server
        self.sock = bind(server.host, settings.http.http_port or 0, server.reuse_port)
        self.port = self.sock.getsockname()[1]
        security = settings.security
        tls = {}
        if security.tls_cert_file is not None:
            tls = {"ssl_certfile": str(security.tls_cert_file)}
            tls["ssl_keyfile"] = str(security.tls_key_file)
            if security.tls_client_ca_file is not None:
                tls["ssl_ca_certs"] = str(security.tls_client_ca_file)
                tls["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=max(1, round(server.drain_grace_s)),
            **tls,
        )
        self.server = EmbeddedServer(config)
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises what stopped it
                raise StartupError(f"{setting_label('http_port')}: the HTTP server did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, let the calls in flight finish (within drain_grace_s), close."""
        self.server.should_exit = True
        if self.task is not None:
            await self.task


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # a response written in two parts waits out the client's delayed ACK (~40 ms a call)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # workers of one supervisor share the port (service.workers)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise StartupError(
            f"{setting_label('http_port')} {port}: cannot listen on {host}:{port} ({e.strerror})"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock
