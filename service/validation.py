"""Request checks made before anything is queued; each failure names the field and the limit."""

from __future__ import annotations

import math
import unicodedata

from service.contract.types import ParseInput
from service.errors import InvalidArgument
from service.settings import LimitsSettings


def visible(text: str) -> bool:
    """Whether any character would show: not whitespace, not a format character (zero-width
    space, joiners, the byte-order mark: Unicode Cf), not a control character (Cc)."""
    return any(not ch.isspace() and unicodedata.category(ch) not in ("Cf", "Cc") for ch in text)


def check_request(request: ParseInput, limits: LimitsSettings, index: int | None = None) -> None:
    """`index`: the request's place in a batch (messages say `request 1: ...`, the BadRequest
    detail names the field `requests[1].text`)."""
    where = f"request {index}: " if index is not None else ""
    prefix = f"requests[{index}]." if index is not None else ""
    if not visible(request.text):
        raise InvalidArgument(
            f"{where}text is empty or has no visible character (only whitespace, zero-width "
            "or control characters)",
            f"{prefix}text",
        )
    if len(request.text) > limits.max_text_chars:
        raise InvalidArgument(
            f"{where}text has {len(request.text)} characters; the limit is {limits.max_text_chars}",
            f"{prefix}text",
        )
    if request.threshold is not None and not (
        math.isfinite(request.threshold) and 0.0 <= request.threshold <= 1.0
    ):
        raise InvalidArgument(
            f"{where}confidence_threshold {request.threshold} is outside [0, 1]",
            f"{prefix}routing.confidence_threshold",
        )


def check_batch_size(count: int, limits: LimitsSettings) -> None:
    if count == 0:
        raise InvalidArgument("requests is empty", "requests")
    if count > limits.max_batch_items:
        raise InvalidArgument(
            f"{count} requests in one batch; the limit is {limits.max_batch_items}", "requests"
        )
