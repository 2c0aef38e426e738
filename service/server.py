"""The gRPC server process.

    python -m service.server --bundle bundles/atis --port 50051

Health is NOT_SERVING until the bundle is verified, loaded and warmed. On SIGTERM/SIGINT health
turns NOT_SERVING, new RPCs are refused, in-flight ones get `drain_grace_s` to finish, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError

from service import logs, metrics
from service.bundle import BundleError
from service.core import NluCore
from service.gen.nlu.v1 import nlu_pb2, nlu_pb2_grpc
from service.servicer import NluServicer
from service.settings import Settings, load_settings

log = logging.getLogger("service.server")
SERVICE_NAME = nlu_pb2.DESCRIPTOR.services_by_name["NluService"].full_name


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
        ("grpc.so_reuseport", 0),
    ]


async def serve(settings: Settings) -> int:
    core = NluCore(settings)
    server = grpc.aio.server(options=grpc_options(settings))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    nlu_pb2_grpc.add_NluServiceServicer_to_server(NluServicer(core), server)
    reflection.enable_server_reflection(
        [
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    metrics.serve_metrics(settings.metrics_port)
    await server.start()
    log.info(
        "listening",
        extra={"address": f"{settings.host}:{port}", "metrics_port": settings.metrics_port},
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    loading = asyncio.ensure_future(core.load())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
    if loading.done() and loading.exception() is None:
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"model_version": core.model_version})
        await stopping
    elif loading.done():
        await server.stop(0)
        raise loading.exception()  # type: ignore[misc]
    else:
        loading.cancel()

    log.info("draining", extra={"grace_s": settings.drain_grace_s})
    await health_servicer.enter_graceful_shutdown()
    core.draining = True
    await server.stop(settings.drain_grace_s)
    await core.close()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ValidationError as e:
        print(f"invalid settings:\n{e}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    try:
        return asyncio.run(serve(settings))
    except (BundleError, FileNotFoundError) as e:
        log.error("cannot serve the bundle", extra={"error": str(e)})
        print(f"cannot serve {settings.bundle}: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a port already taken, an address that does not exist
        log.error("cannot start", extra={"error": str(e)})
        print(f"cannot start the server: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
