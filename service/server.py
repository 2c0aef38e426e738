"""The gRPC server process.

    python -m service.server --bundle bundles/atis --port 50051

Health is NOT_SERVING until the bundle is verified, loaded and warmed; the generator, if any,
loads in the background after that. On SIGTERM/SIGINT health turns NOT_SERVING while calls are
still answered (`drain_notice_s`), then the server sends GOAWAY, lets in-flight RPCs finish
(within `drain_grace_s`) and exits 0 (`drain`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError

from service import logs, metrics
from service.auth import authentication
from service.contract.bundle import BundleError
from service.errors import StartupError
from service.extensions import ExtensionError
from service.gen.nlu.v1 import nlu_pb2_grpc
from service.interceptors import SERVICE_NAME, chain
from service.lifecycle import Lifecycle
from service.loading import load_core, load_generator
from service.servicer import NluServicer
from service.settings import ServerSettings, Settings, load_settings, setting_label
from service.tls import server_credentials

log = logging.getLogger("service.server")


def grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            settings.keepalive_min_client_ping_interval_ms,
        ),
        ("grpc.http2.max_ping_strikes", settings.max_ping_strikes),
        ("grpc.so_reuseport", 0),
    ]
    if settings.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", settings.max_concurrent_streams))
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(settings.drain_grace_s * 1000)),
        ]
    return options


def main_server(
    settings: Settings, lifecycle: Lifecycle, health_servicer: health.aio.HealthServicer
) -> tuple[grpc.aio.Server, int]:
    """nlu.v1 behind the interceptor chain, health and reflection; and the port it bound."""
    interceptors = chain(
        lifecycle, authentication(settings.security), settings.server.concurrent_rpcs_limit
    )
    server = grpc.aio.server(interceptors=interceptors, options=grpc_options(settings.server))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    nlu_pb2_grpc.add_NluServiceServicer_to_server(NluServicer(lifecycle, settings), server)
    if settings.server.reflection:
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
    credentials = server_credentials(settings.security)
    return server, bind(server, "port", settings.server.host, settings.server.port, credentials)


def bind(
    server: grpc.aio.Server,
    setting: str,
    host: str,
    port: int,
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    """The port bound (plaintext without credentials), or a StartupError naming the setting
    and the address (grpc raises a bare RuntimeError: "Failed to bind to address")."""
    address = f"{host}:{port}"
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:
        raise StartupError(
            f"{setting_label(setting)} {port}: cannot listen on {address} (the port is taken, "
            "or the host is no address of this machine)"
        ) from None


def health_server(
    settings: ServerSettings, health_servicer: health.aio.HealthServicer
) -> grpc.aio.Server | None:
    """grpc.health.v1 alone on `health_port`, plaintext: what kubelet's grpc probes reach."""
    if not settings.health_port:
        return None
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bind(server, "health_port", settings.host, settings.health_port)
    return server


async def set_health(health_servicer: health.aio.HealthServicer, status: int) -> None:
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, status)


class Health(health.aio.HealthServicer):
    """grpc.health.v1 whose Watch streams a drain can end: a watch never ends by itself, so a
    server stopping with a grace would wait all of it for every client that holds one (the
    shipped client config holds one per server)."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = asyncio.Event()

    async def Watch(self, request, context):
        """grpc's Watch until the drain ends it; then the stream closes with OK (cancelling the
        handler's task would not do: grpc.aio takes that for a cancellation by the client and
        leaves the call open)."""
        watching = asyncio.ensure_future(super().Watch(request, context))
        ending = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait([watching, ending], return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            ending.cancel()

    def end_watches(self) -> None:
        self.ended.set()


async def drain(
    server: grpc.aio.Server, lifecycle: Lifecycle, health_servicer: Health, settings: ServerSettings
) -> None:
    """A rollout that callers do not see. Health turns NOT_SERVING at once (clients that watch
    health, kubelet's readiness probe) while every call that still arrives is answered, for
    `drain_notice_s`; then the server stops: GOAWAY tells clients to send new calls elsewhere
    (a call racing it is retried by gRPC transparently), no new connection is accepted, and the
    nlu.v1 calls in flight finish within what is left of `drain_grace_s`. Health watches are
    then ended instead of being waited for (one stop call: grpc.aio is not asked to stop twice)."""
    started = time.monotonic()
    grace_s = settings.drain_grace_s
    log.info("draining", extra={"notice_s": settings.drain_notice_s, "grace_s": grace_s})
    await health_servicer.enter_graceful_shutdown()
    await asyncio.sleep(min(settings.drain_notice_s, grace_s))
    remaining = max(0.0, grace_s - (time.monotonic() - started))
    stopping = asyncio.ensure_future(server.stop(remaining))
    await lifecycle.idle(remaining)
    log.info("stopping", extra={"unfinished": lifecycle.in_flight})
    health_servicer.end_watches()
    await stopping


async def serve(settings: Settings) -> int:
    lifecycle = Lifecycle()
    health_servicer = Health()
    await set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    server, port = main_server(settings, lifecycle, health_servicer)
    probes = health_server(settings.server, health_servicer)
    metrics_port = settings.observability.metrics_port
    try:
        metrics.serve_metrics(metrics_port)
    except OSError as e:
        raise StartupError(
            f"{setting_label('metrics_port')} {metrics_port}: cannot listen ({e.strerror})"
        ) from None
    for started in (server, probes):
        if started is not None:
            await started.start()
    log.info(
        "listening",
        extra={
            "address": f"{settings.server.host}:{port}",
            "metrics_port": metrics_port,
            "health_port": settings.server.health_port,
        },
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    loading = asyncio.ensure_future(load_core(settings))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
    if loading.done() and loading.exception() is None:
        lifecycle.core = loading.result()
        await set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"model_version": lifecycle.core.engine.bundle.model_version})
        backend = lifecycle.core.router.backend
        generator = asyncio.ensure_future(load_generator(backend)) if backend else None
        await stopping
        if generator is not None:
            generator.cancel()
    elif loading.done():
        await server.stop(0)
        raise loading.exception()  # type: ignore[misc]
    else:
        loading.cancel()

    await drain(server, lifecycle, health_servicer, settings.server)
    if probes is not None:
        await probes.stop(0)
    if lifecycle.core is not None:
        await lifecycle.core.close()
    log.info("stopped")
    return 0


def describe_errors(error: ValidationError) -> str:
    """One line per problem, naming the setting, without echoing the values (secrets)."""
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "settings"
        lines.append(f"  {where}: {problem['msg']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ValidationError as e:
        print(f"invalid settings:\n{describe_errors(e)}", file=sys.stderr)
        return 2
    logs.configure(settings.observability.log_level)
    try:
        return asyncio.run(serve(settings))
    except ExtensionError as e:
        log.error("cannot load the extension intents", extra={"error": str(e)})
        print(f"cannot load the extension intents: {e}", file=sys.stderr)
        return 1
    except (BundleError, FileNotFoundError) as e:
        log.error("cannot serve the bundle", extra={"error": str(e)})
        print(f"cannot serve {settings.server.bundle}: {e}", file=sys.stderr)
        return 1
    except StartupError as e:
        log.error("cannot start", extra={"error": str(e)})
        print(f"cannot start the server: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
