"""The one table from the core's error kinds to gRPC status codes, with the google.rpc details
a client can act on (BadRequest naming the field, RetryInfo with the retry hint)."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from service.errors import ErrorKind, ServiceError, as_service_error

GRPC_CODES = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.DEADLINE: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(status code, client-facing message, failure reason label) for any exception."""
    error = as_service_error(exc)
    return GRPC_CODES[error.kind], str(error), error.reason


def status_details(exc: BaseException) -> list[Message]:
    """A google.rpc.BadRequest naming the field, a google.rpc.RetryInfo with the retry hint;
    none for an untyped exception."""
    if not isinstance(exc, ServiceError):
        return []
    details: list[Message] = []
    if exc.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=str(exc)
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if exc.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=exc.retry_after_s))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return details


def rich_status(code: grpc.StatusCode, message: str, details: list[Message]) -> status_pb2.Status:
    """A google.rpc.Status carrying `details` (sent with grpc_status.rpc_status.to_status)."""
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=code.value[0], message=message, details=packed)
