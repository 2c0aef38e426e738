"""Typed errors of the serving core, free of any transport.

The core raises these; each carries a `kind` (what went wrong, in terms a caller can act on) and
a `reason` (the `nlu_request_failure_total` label). Each front end maps kinds to its own codes in
one table (`service.grpc_api.status`). Anything else becomes `internal_error`: kind INTERNAL with
a generic message (the detail goes to the log).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger(__name__)


class ErrorKind(Enum):
    INVALID_ARGUMENT = "invalid_argument"  # the request is wrong; `field` says where
    UNAUTHENTICATED = "unauthenticated"  # no credentials, or not valid ones
    OVERLOADED = "overloaded"  # shed: retry after `retry_after_s`
    DEADLINE = "deadline"  # the caller's deadline passed before an answer
    UNAVAILABLE = "unavailable"  # not serving (yet, or any more): try another replica
    INTERNAL = "internal"  # a bug or a broken dependency: the log has the detail


class ServiceError(Exception):
    kind = ErrorKind.INTERNAL
    reason = "internal"
    field = ""  # the request field at fault (`requests[1].text`), when known
    retry_after_s: float | None = None  # when a retry may succeed, when known


class InvalidArgument(ServiceError):
    kind = ErrorKind.INVALID_ARGUMENT
    reason = "invalid_argument"

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class Unauthenticated(ServiceError):
    kind = ErrorKind.UNAUTHENTICATED
    reason = "unauthenticated"


class Overloaded(ServiceError):
    kind = ErrorKind.OVERLOADED
    reason = "queue_full"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ServiceError):
    kind = ErrorKind.DEADLINE
    reason = "deadline"


class Unavailable(ServiceError):
    kind = ErrorKind.UNAVAILABLE
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


def as_service_error(exc: BaseException) -> ServiceError:
    """`exc` itself when typed; anything else logged and replaced by a generic INTERNAL error
    (its message could leak internals)."""
    if isinstance(exc, ServiceError):
        return exc
    log.error("unexpected error", exc_info=exc)
    return ServiceError(INTERNAL_MESSAGE)
