"""The server process: loads the model once and serves it through the gRPC front end
(`service.grpc_api`) and, with `http_port`, the HTTP/JSON one (`service.http_api`), both on the
same core in one event loop.

    python -m service.server --bundle bundles/atis --port 50051

Health is NOT_SERVING until the bundle is verified, loaded and warmed; the generator, if any,
loads in the background after that. On SIGTERM/SIGINT health turns NOT_SERVING while calls are
still answered (`drain_notice_s`), then the server sends GOAWAY, lets in-flight RPCs finish
(within `drain_grace_s`) and exits 0 (`drain`). With `workers` > 1 this process supervises that
many servers sharing the ports instead (`service.workers`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2
from pydantic import ValidationError

from service import logs, metrics, tracing
from service.contract.bundle import BundleError
from service.errors import StartupError
from service.extensions import ExtensionError
from service.grpc_api.server import Health, health_server, main_server, set_health
from service.http_api.app import http_app
from service.http_api.server import HttpServer
from service.lifecycle import Lifecycle
from service.loading import load_core, load_generator
from service.settings import ServerSettings, Settings, load_settings, setting_label
from service.tokens import token_store
from service.workers import notify_ready, supervise

log = logging.getLogger("service.server")


async def drain(
    server: grpc.aio.Server,
    http: HttpServer | None,
    lifecycle: Lifecycle,
    health_servicer: Health,
    settings: ServerSettings,
) -> None:
    """A rollout that callers do not see. Health turns NOT_SERVING at once (clients that watch
    health, kubelet's readiness probe, HTTP /readyz) while every call that still arrives is
    answered, for `drain_notice_s`; then the servers stop: GOAWAY tells gRPC clients to send new
    calls elsewhere (a call racing it is retried by gRPC transparently), HTTP stops accepting
    and closes idle keep-alive connections, and the calls in flight on both finish within what
    is left of `drain_grace_s`. Health watches are then ended instead of being waited for (one
    stop call: grpc.aio is not asked to stop twice)."""
    started = time.monotonic()
    grace_s = settings.drain_grace_s
    log.info("draining", extra={"notice_s": settings.drain_notice_s, "grace_s": grace_s})
    lifecycle.draining = True
    await health_servicer.enter_graceful_shutdown()
    await asyncio.sleep(min(settings.drain_notice_s, grace_s))
    remaining = max(0.0, grace_s - (time.monotonic() - started))
    stopping = [asyncio.ensure_future(server.stop(remaining))]
    if http is not None:
        stopping.append(asyncio.ensure_future(http.stop()))
    await lifecycle.idle(remaining)
    log.info("stopping", extra={"unfinished": lifecycle.in_flight})
    health_servicer.end_watches()
    await asyncio.gather(*stopping)


async def serve(settings: Settings) -> int:
    if tracing.configure():
        log.info("tracing", extra={"exporter": "otlp"})
    preloaded = None
    if settings.server.reuse_port:
        # A port shared with other workers must only hand connections to workers that can
        # answer them: bind once loaded (its siblings serve meanwhile).
        preloaded = asyncio.ensure_future(load_core(settings))
        await asyncio.wait([preloaded])
    lifecycle = Lifecycle()
    health_servicer = Health()
    await set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    tokens = token_store(settings.security)
    server, port = main_server(settings, lifecycle, health_servicer, tokens)
    probes = health_server(settings.server, health_servicer)
    http = (
        HttpServer(http_app(lifecycle, settings, tokens), settings)
        if settings.http.http_port is not None
        else None
    )
    metrics_port = settings.observability.metrics_port
    try:
        metrics.serve_metrics(metrics_port)
    except OSError as e:
        raise StartupError(
            f"{setting_label('metrics_port')} {metrics_port}: cannot listen ({e.strerror})"
        ) from None
    for started in (server, probes, http):
        if started is not None:
            await started.start()
    log.info(
        "listening",
        extra={
            "address": f"{settings.server.host}:{port}",
            "http_port": http.port if http is not None else None,
            "metrics_port": metrics_port,
            "health_port": settings.server.health_port,
        },
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    loading = preloaded or asyncio.ensure_future(load_core(settings))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
    if loading.done() and loading.exception() is None:
        lifecycle.core = loading.result()
        await set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"model_version": lifecycle.core.engine.bundle.model_version})
        notify_ready()
        backend = lifecycle.core.router.backend
        generator = asyncio.ensure_future(load_generator(backend)) if backend else None
        await stopping
        if generator is not None:
            generator.cancel()
    elif loading.done():
        await server.stop(0)
        if http is not None:
            await http.stop()
        raise loading.exception()  # type: ignore[misc]
    else:
        loading.cancel()

    await drain(server, http, lifecycle, health_servicer, settings.server)
    if probes is not None:
        await probes.stop(0)
    if lifecycle.core is not None:
        await lifecycle.core.close()
    tracing.shutdown()
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
        if settings.server.workers > 1:
            return supervise(settings, sys.argv[1:] if argv is None else argv)
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
