"""The gRPC server's wiring: channel options, nlu.v1 behind the interceptor chain with health
and reflection, the plaintext probe port, and health watches a drain can end."""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.errors import StartupError
from service.gen.nlu.v1 import nlu_pb2_grpc
from service.grpc_api.auth import authentication
from service.grpc_api.interceptors import SERVICE_NAME, chain
from service.grpc_api.servicer import NluServicer
from service.grpc_api.tls import server_credentials
from service.lifecycle import Lifecycle
from service.settings import ServerSettings, Settings, setting_label
from service.tokens import TokenStore

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
        ("grpc.so_reuseport", int(settings.reuse_port)),
    ]
    if settings.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", settings.max_concurrent_streams))
    if settings.max_pending_rpcs:
        options += [
            ("grpc.server.max_pending_requests", settings.max_pending_rpcs // 2),
            ("grpc.server.max_pending_requests_hard_limit", settings.max_pending_rpcs),
        ]
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(settings.drain_grace_s * 1000)),
        ]
    return options


def main_server(
    settings: Settings,
    lifecycle: Lifecycle,
    health_servicer: health.aio.HealthServicer,
    tokens: TokenStore | None,
) -> tuple[grpc.aio.Server, int]:
    """nlu.v1 behind the interceptor chain, health and reflection; and the port it bound."""
    interceptors = chain(lifecycle, authentication(tokens), settings.limits.concurrent_rpcs_limit)
    server = grpc.aio.server(interceptors=interceptors, options=grpc_options(settings.server))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    nlu_pb2_grpc.add_NluServiceServicer_to_server(
        NluServicer(lifecycle, settings.limits.max_stream_in_flight), server
    )
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
    server = grpc.aio.server(options=[("grpc.so_reuseport", int(settings.reuse_port))])
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
