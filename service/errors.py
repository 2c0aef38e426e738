"""Typed errors of the serving core and their one mapping to gRPC status codes.

The core raises these; `grpc_status` is the only place that turns an exception into a status.
Anything not listed becomes INTERNAL with a generic message (the detail goes to the log).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

log = logging.getLogger(__name__)


class ServiceError(Exception):
    code = grpc.StatusCode.INTERNAL
    reason = "internal"

    def details(self) -> list[Message]:
        """Rich status details (google.rpc) a client can act on; none by default."""
        return []


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_argument"

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field

    def details(self) -> list[Message]:
        """A google.rpc.BadRequest naming the field (`requests[1].text`), when known."""
        if not self.field:
            return []
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=self.field, description=str(self)
        )
        return [error_details_pb2.BadRequest(field_violations=[violation])]


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "unauthenticated"


class Overloaded(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "queue_full"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def details(self) -> list[Message]:
        """A google.rpc.RetryInfo: about when the queue will have drained."""
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=self.retry_after_s))
        return [error_details_pb2.RetryInfo(retry_delay=delay)]


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "deadline"


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"


class StartupError(Exception):
    """A setting, file or port that stops the server from starting; the message names it (one
    line, no traceback: `service.server.main` prints it and exits 1)."""


@dataclass(frozen=True)
class Undecodable:
    """A message that did not decode as the method's request type (bad UTF-8 in a string field,
    truncated bytes); `field` is where, when known (`requests[2].text`)."""

    problem: str
    field: str = ""

    def refuse(self) -> InvalidArgument:
        where = f" at {self.field}" if self.field else ""
        return InvalidArgument(
            f"the request is not a valid protobuf message{where}: {self.problem}", self.field
        )


INTERNAL_MESSAGE = "internal error; see server logs"


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(status code, client-facing message, failure reason label) for any exception; a
    ServiceError's `details()` travel beside them (ErrorMapping sends both)."""
    if isinstance(exc, ServiceError):
        return exc.code, str(exc), exc.reason
    log.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, "internal"


def rich_status(code: grpc.StatusCode, message: str, details: list[Message]) -> status_pb2.Status:
    """A google.rpc.Status carrying `details` (sent with grpc_status.rpc_status.to_status)."""
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=code.value[0], message=message, details=packed)
