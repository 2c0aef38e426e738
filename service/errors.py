"""Typed errors of the serving core and their one mapping to gRPC status codes.

The core raises these; `grpc_status` is the only place that turns an exception into a status.
Anything not listed becomes INTERNAL with a generic message (the detail goes to the log).
"""

from __future__ import annotations

import logging

import grpc

log = logging.getLogger(__name__)


class ServiceError(Exception):
    code = grpc.StatusCode.INTERNAL
    reason = "internal"


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_argument"


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "unauthenticated"


class Overloaded(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "queue_full"


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "deadline"


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"


INTERNAL_MESSAGE = "internal error; see server logs"


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(status code, client-facing message, failure reason label) for any exception."""
    if isinstance(exc, ServiceError):
        return exc.code, str(exc), exc.reason
    log.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, "internal"
