"""The server interceptor chain: every nlu.v1 RPC, unary or streaming, passes through it, so
handlers carry no error handling, metrics or logging of their own and a new RPC gets them free.

Order, outermost first (`chain()`):
0. `ConcurrencyLimit` (when `max_concurrent_rpcs` is set): refuses nlu.v1 RPCs beyond the
   limit before any other work, and counts them.
1. OpenTelemetry's gRPC server interceptor, when tracing is on (`service.tracing`): it sees
   everything but the refusals.
2. `Telemetry`: times the RPC, counts `nlu_requests_total{method, code}` and, once per failed
   RPC, `nlu_request_failure_total{reason}`; one DEBUG access-log line per RPC; keeps the count
   of RPCs in flight that a drain waits for.
3. `ErrorMapping`: turns any exception into its gRPC status (`service.grpc_api.status`, the
   only mapping) and aborts the RPC with it; a request that does not decode (bad UTF-8 in a
   string field, truncated bytes) becomes INVALID_ARGUMENT instead of UNKNOWN, naming the field
   that does not decode (`requests[2].text`). In a stream such a request reaches the handler as
   `Undecodable`, which answers it with a per-item error and reads on.
4. `service.grpc_api.auth.Authentication` (when tokens are configured): inside ErrorMapping, so its
   refusal is mapped (UNAUTHENTICATED) and counted.
Health and reflection RPCs bypass the chain (probes must not need credentials).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from service import metrics, tracing
from service.errors import Undecodable
from service.gen.nlu.v1 import nlu_pb2
from service.grpc_api.status import grpc_status, rich_status, status_details
from service.grpc_api.wire import undecodable_field
from service.lifecycle import Lifecycle

log = logging.getLogger(__name__)
SERVICE_NAME = nlu_pb2.DESCRIPTOR.services_by_name["NluService"].full_name


@dataclass
class Outcome:
    """How one RPC ended: written by ErrorMapping, read by Telemetry."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    reason: str = ""  # failure label when code is not OK


OUTCOME: ContextVar[Outcome] = ContextVar("rpc_outcome")


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the behaviour of every nlu.v1 handler: `unary` around a call that returns the
    response, `stream` around the iterator of responses. Subclasses override either."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        service, _, method = details.method.lstrip("/").partition("/")
        if handler is None or service != SERVICE_NAME:
            return handler
        return self.wrap(handler, method)

    async def unary(
        self, method: str, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[Any]]
    ) -> Any:
        return await call()

    async def stream(
        self, method: str, context: grpc.aio.ServicerContext, responses: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        async for response in responses:
            yield response

    def deserializer(self, deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        """The request decoder (subclasses may wrap it)."""
        return deserialize

    def request(self, request: Any) -> Any:
        """A unary RPC's decoded request, before the handler sees it."""
        return request

    def requests(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A client-streaming RPC's decoded requests, before the handler sees them."""
        return requests

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        codecs = {
            "request_deserializer": self.deserializer(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        inbound = self.requests if handler.request_streaming else self.request
        if handler.unary_unary or handler.stream_unary:
            behaviour = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                return await self.unary(
                    method, context, lambda: behaviour(inbound(request), context)
                )

            make = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            return make(unary, **codecs)
        behaviour = handler.unary_stream or handler.stream_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            responses = self.stream(method, context, behaviour(inbound(request), context))
            async for response in responses:
                yield response

        make = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        return make(streaming, **codecs)


class Telemetry(RpcInterceptor):
    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    async def unary(self, method, context, call):
        outcome, started = self.begin()
        try:
            return await call()
        except asyncio.CancelledError:
            outcome.code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.end(method, outcome, started)

    async def stream(self, method, context, responses):
        outcome, started = self.begin()
        try:
            async for response in responses:
                yield response
        except asyncio.CancelledError:
            outcome.code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.end(method, outcome, started)

    def begin(self) -> tuple[Outcome, float]:
        outcome = Outcome()
        OUTCOME.set(outcome)  # each RPC runs in a task of its own: nothing to reset
        self.lifecycle.rpc_started()
        return outcome, time.perf_counter()

    def end(self, method: str, outcome: Outcome, started: float) -> None:
        self.lifecycle.rpc_finished()
        elapsed = time.perf_counter() - started
        metrics.REQUESTS.labels(method, outcome.code.name).inc()
        metrics.REQUEST_DURATION.labels(method).observe(elapsed)
        if outcome.reason:
            metrics.FAILURES.labels(outcome.reason).inc()
        log.debug(
            "rpc",
            extra={
                "method": method,
                "code": outcome.code.name,
                "duration_ms": round(elapsed * 1000, 3),
            },
        )


class ErrorMapping(RpcInterceptor):
    def deserializer(self, deserialize):
        message_type = getattr(deserialize, "__self__", None)  # the class of X.FromString

        def tolerant(data: bytes) -> Any:
            try:
                return deserialize(data)
            except DecodeError as e:
                field = undecodable_field(message_type.DESCRIPTOR, data) if message_type else ""
                return Undecodable(str(e), field)

        return tolerant

    def request(self, request):
        if isinstance(request, Undecodable):
            raise request.refuse()
        return request

    async def unary(self, method, context, call):
        try:
            return await call()
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await self.abort(exc, context)

    async def stream(self, method, context, responses):
        try:
            async for response in responses:
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await self.abort(exc, context)

    @staticmethod
    async def abort(exc: Exception, context: grpc.aio.ServicerContext) -> None:
        code, message, reason = grpc_status(exc)
        outcome = OUTCOME.get(None)
        if outcome is not None:
            outcome.code, outcome.reason = code, reason
        details = status_details(exc)
        if details:
            await context.abort_with_status(
                rpc_status.to_status(rich_status(code, message, details))
            )
        await context.abort(code, message)


class ConcurrencyLimit(grpc.aio.ServerInterceptor):
    """At most `limit` nlu.v1 RPCs at once, read from the lifecycle's in-flight count (which
    Telemetry keeps). The excess gets RESOURCE_EXHAUSTED before its request is even read, and
    is counted (`nlu_requests_total{code="RESOURCE_EXHAUSTED"}` and
    `nlu_request_failure_total{reason="concurrency_limit"}`), so an operator sees sheds, which
    grpc.aio's own `maximum_concurrent_rpcs` hides. A call counts once its handler starts
    (calls arriving in the same instant may all pass: the limit bounds work, it is not a
    semaphore). Health and reflection are not limited: every client with the shipped config
    holds a health watch open on each server, which would otherwise take the places of calls.
    Outermost in the chain: a refusal costs no other interceptor's work."""

    def __init__(self, lifecycle: Lifecycle, limit: int) -> None:
        self.lifecycle, self.limit = lifecycle, limit
        self.message = f"more than {limit} RPCs in flight on this server; retry with backoff"
        # One refusal for every method: a stream handler that never reads its requests (a
        # unary caller cannot tell: both are one HTTP/2 stream).
        self._refuse = grpc.stream_stream_rpc_method_handler(self._refused)
        self._refusals = metrics.FAILURES.labels("concurrency_limit")
        self._refused_calls: dict[str, Any] = {}  # method → its RESOURCE_EXHAUSTED counter

    async def _refused(self, requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator:
        """The status set and the stream ended, not `abort`: at three times capacity every
        refusal's cost counts, and an exception through grpc.aio's handler costs more."""
        context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
        context.set_details(self.message)
        return
        yield  # an async generator: the handler type asks for one

    async def intercept_service(self, continuation, details):
        service, _, method = details.method.lstrip("/").partition("/")
        if service == SERVICE_NAME and self.lifecycle.in_flight >= self.limit:
            self._refusals.inc()
            counter = self._refused_calls.get(method)
            if counter is None:
                counter = metrics.REQUESTS.labels(method, "RESOURCE_EXHAUSTED")
                self._refused_calls[method] = counter
            counter.inc()
            return self._refuse
        return await continuation(details)


def chain(
    lifecycle: Lifecycle,
    authentication: RpcInterceptor | None = None,
    concurrency_limit: int | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors in the order the module docstring gives (outermost first)."""
    outer = [ConcurrencyLimit(lifecycle, concurrency_limit)] if concurrency_limit else []
    if tracing.ENABLED:  # the official instrumentation: a span per nlu.v1 RPC, the caller's
        # trace; health and reflection stay untraced (and its wrapper takes a stream handler
        # for an async generator, which Health.Watch is not)
        from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

        outer.append(aio_server_interceptor(filter_=filters.service_name(SERVICE_NAME)))
    inner = [authentication] if authentication is not None else []
    return [*outer, Telemetry(lifecycle), ErrorMapping(), *inner]
