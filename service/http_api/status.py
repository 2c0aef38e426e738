"""The one table from the core's error kinds to HTTP statuses, and the JSON error body: Google's
HTTP error model (`{"error": {"code", "status", "message", ...}}`) so the status names match the
gRPC codes a caller of the other front end sees."""

from __future__ import annotations

import math

from starlette.responses import JSONResponse

from service.errors import ErrorKind, ServiceError, as_service_error

HTTP_STATUS = {  # kind → (HTTP status, canonical status name)
    ErrorKind.INVALID_ARGUMENT: (400, "INVALID_ARGUMENT"),
    ErrorKind.UNAUTHENTICATED: (401, "UNAUTHENTICATED"),
    ErrorKind.OVERLOADED: (429, "RESOURCE_EXHAUSTED"),
    ErrorKind.DEADLINE: (504, "DEADLINE_EXCEEDED"),
    ErrorKind.UNAVAILABLE: (503, "UNAVAILABLE"),
    ErrorKind.INTERNAL: (500, "INTERNAL"),
}


def error_body(http_status: int, status: str, message: str, **extra: object) -> dict:
    return {"error": {"code": http_status, "status": status, "message": message, **extra}}


def error_response(exc: BaseException) -> tuple[JSONResponse, str]:
    """The response for any exception, and its failure reason label. A 429 carries
    `Retry-After` (whole seconds, rounded up), a 401 `WWW-Authenticate`."""
    error: ServiceError = as_service_error(exc)
    http_status, status = HTTP_STATUS[error.kind]
    extra: dict[str, object] = {}
    headers: dict[str, str] = {}
    if error.field:
        extra["field"] = error.field
    if error.retry_after_s is not None:
        extra["retryAfterS"] = error.retry_after_s
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if error.kind is ErrorKind.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    body = error_body(http_status, status, str(error), **extra)
    return JSONResponse(body, status_code=http_status, headers=headers), error.reason
