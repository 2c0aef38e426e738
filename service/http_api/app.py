"""The HTTP/JSON routes over the core. Bodies and answers are the nlu.v1 messages in the proto's
JSON mapping (`google.protobuf.json_format`; answers in lowerCamelCase with every field, requests
in either spelling), converted by `service.api` as gRPC's are, so the two APIs cannot drift.

    POST /v1/parse          ParseRequest → ParseResponse
    POST /v1/parse:batch    ParseBatchRequest → ParseBatchResponse
    GET  /v1/model          ModelInfo
    GET  /healthz           200 while the process runs (liveness)
    GET  /readyz            200 while the gRPC health is SERVING; 503 loading or draining
    POST /model/parse       Rasa's external NLU contract (`service.http_api.rasa`)

Every call but the probes goes through `call`: the concurrency limit gRPC applies (the same
in-flight count, so a drain waits for HTTP calls too), the body limit (413), the error table
(`service.http_api.status`), and the metrics (`nlu_requests_total{method="POST /v1/parse",
code="200"}`, the failure reasons); each handler then authenticates the caller (the bearer
header; Rasa's endpoint also its query parameter or body token) before the core sees anything.
A caller's deadline comes as `X-Server-Timeout: <seconds>` (the HTTP form Google's APIs give a
gRPC deadline): past it the call ends 504 DEADLINE_EXCEEDED, as gRPC's would.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable

from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import api, metrics, tracing
from service.errors import InvalidArgument, Overloaded
from service.gen.nlu.v1 import nlu_pb2
from service.http_api import rasa
from service.http_api.status import error_body, error_response
from service.lifecycle import Lifecycle
from service.settings import HttpSettings, Settings
from service.tokens import TokenStore

log = logging.getLogger(__name__)
Handler = Callable[[Request, bytes], Awaitable[Response]]


class BodyTooLarge(Exception):
    pass


def message_response(message: Message) -> JSONResponse:
    return JSONResponse(
        json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    )


def read_message(body: bytes, message: Message) -> Message:
    """`body` as `message`'s JSON mapping, or INVALID_ARGUMENT naming the problem."""
    name = message.DESCRIPTOR.name
    try:
        return json_format.Parse(body.decode("utf-8"), message)
    except UnicodeDecodeError as e:
        raise InvalidArgument(f"the body is not UTF-8 ({e.reason} at byte {e.start})") from None
    except json_format.ParseError as e:
        raise InvalidArgument(f"the body is not a {name} in JSON: {e}") from None


TIMEOUT_HEADER = "X-Server-Timeout"


def timeout_s(request: Request) -> float | None:
    """The caller's deadline in seconds, when it sent one."""
    value = request.headers.get(TIMEOUT_HEADER)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidArgument(
            f"the {TIMEOUT_HEADER} header must be a positive number of seconds, not {value!r}"
        )
    return seconds


def bearer_token(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    return value.removeprefix("Bearer ").strip() if value.startswith("Bearer ") else None


class HttpApi:
    """The routes over the core. Of the settings it reads the HTTP group and the concurrency
    limit it shares with gRPC."""

    def __init__(
        self, lifecycle: Lifecycle, http: HttpSettings, limit: int | None, tokens: TokenStore | None
    ) -> None:
        self.lifecycle, self.http, self.limit, self.tokens = lifecycle, http, limit, tokens
        self.max_body = http.http_max_body_bytes

    def routes(self) -> list[Route]:
        return [
            Route("/v1/parse", self.wrap("POST /v1/parse", self.parse), methods=["POST"]),
            Route(
                "/v1/parse:batch",
                self.wrap("POST /v1/parse:batch", self.parse_batch),
                methods=["POST"],
            ),
            Route("/v1/model", self.wrap("GET /v1/model", self.model), methods=["GET"]),
            Route(
                "/model/parse", self.wrap("POST /model/parse", self.rasa_parse), methods=["POST"]
            ),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
        ]

    def wrap(self, method: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self.call(method, request, handler)

        return endpoint

    async def call(self, method: str, request: Request, handler: Handler) -> Response:
        if self.limit is not None and self.lifecycle.in_flight >= self.limit:
            refused = Overloaded(
                f"more than {self.limit} calls in flight on this server; retry with backoff", 1.0
            )
            response, _ = error_response(refused)
            metrics.FAILURES.labels("concurrency_limit").inc()
            metrics.REQUESTS.labels(method, "429").inc()
            return response
        self.lifecycle.rpc_started()
        started = time.perf_counter()
        reason = ""
        try:
            response = await handler(request, await self.body(request))
        except BodyTooLarge:
            message = f"the body is larger than {self.max_body} bytes (http_max_body_bytes)"
            response = JSONResponse(error_body(413, "INVALID_ARGUMENT", message), 413)
            reason = "too_large"
        except Exception as exc:
            response, reason = error_response(exc)
        finally:
            self.lifecycle.rpc_finished()
        elapsed = time.perf_counter() - started
        metrics.REQUESTS.labels(method, str(response.status_code)).inc()
        metrics.REQUEST_DURATION.labels(method).observe(elapsed)
        if reason:
            metrics.FAILURES.labels(reason).inc()
        log.debug(
            "http",
            extra={
                "method": method,
                "code": response.status_code,
                "duration_ms": round(elapsed * 1000, 3),
            },
        )
        return response

    def authenticate(self, token: str | None) -> None:
        """Unauthenticated unless a configured token is presented (no tokens: anyone)."""
        if self.tokens is not None:
            self.tokens.check(token, "`Authorization: Bearer <token>` header")

    async def body(self, request: Request) -> bytes:
        """The whole body, refused past `http_max_body_bytes` before it is all read."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise BodyTooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def parse(self, request: Request, body: bytes) -> Response:
        self.authenticate(bearer_token(request))
        message = read_message(body, nlu_pb2.ParseRequest())
        core = self.lifecycle.loaded()
        (response,) = await api.parse(core, [message], timeout_s(request))
        return message_response(response)

    async def parse_batch(self, request: Request, body: bytes) -> Response:
        self.authenticate(bearer_token(request))
        message = read_message(body, nlu_pb2.ParseBatchRequest())
        core = self.lifecycle.loaded()
        return message_response(await api.parse_batch(core, message, timeout_s(request)))

    async def model(self, request: Request, body: bytes) -> Response:
        self.authenticate(bearer_token(request))
        return message_response(api.model_info(self.lifecycle.loaded()))

    async def rasa_parse(self, request: Request, body: bytes) -> Response:
        """Rasa's `/model/parse`: its token may come as the bearer header, the query parameter
        `rasa_token_name` or the body's `token` (what Rasa 3.6 sends)."""
        try:
            decoded = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidArgument(f"the body is not JSON: {e}") from None
        message, body_token = rasa.parse_request(decoded)
        query_token = request.query_params.get(self.http.rasa_token_name)
        self.authenticate(bearer_token(request) or query_token or body_token)
        (answer,) = await api.parse(self.lifecycle.loaded(), [message], timeout_s(request))
        fallback = self.http.rasa_fallback_intent
        return JSONResponse(rasa.parse_result(answer, message.text, fallback))

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        ready = self.lifecycle.ready
        return JSONResponse(
            {"status": "SERVING" if ready else "NOT_SERVING"}, status_code=200 if ready else 503
        )


def http_app(lifecycle: Lifecycle, settings: Settings, tokens: TokenStore | None):
    """The ASGI app; inside OpenTelemetry's ASGI middleware when tracing is on (a span per
    call, continuing the caller's `traceparent`; the probes are not traced)."""
    api = HttpApi(lifecycle, settings.http, settings.limits.concurrent_rpcs_limit, tokens)
    app = Starlette(routes=api.routes())
    if not tracing.ENABLED:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app, excluded_urls="healthz,readyz")
