"""Request checks made before anything is queued; each failure names the field and the limit."""

from __future__ import annotations

import math

from service.contract.types import ParseInput
from service.errors import InvalidArgument
from service.settings import ServerSettings


def check_request(request: ParseInput, limits: ServerSettings, position: str = "") -> None:
    where = f"{position}: " if position else ""
    if not request.text.strip():
        raise InvalidArgument(f"{where}text is empty or whitespace-only")
    if len(request.text) > limits.max_text_chars:
        raise InvalidArgument(
            f"{where}text has {len(request.text)} characters; the limit is {limits.max_text_chars}"
        )
    if request.threshold is not None and not (
        math.isfinite(request.threshold) and 0.0 <= request.threshold <= 1.0
    ):
        raise InvalidArgument(f"{where}confidence_threshold {request.threshold} is outside [0, 1]")


def check_batch_size(count: int, limits: ServerSettings) -> None:
    if count == 0:
        raise InvalidArgument("requests is empty")
    if count > limits.max_batch_items:
        raise InvalidArgument(
            f"{count} requests in one batch; the limit is {limits.max_batch_items}"
        )
