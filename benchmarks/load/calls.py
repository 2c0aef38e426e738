"""What happened to each call a load generator sent, and the tally the reliability figures use.

Outcomes, from the client's side:
- answered: OK;
- shed: the server refused it and said to retry (RESOURCE_EXHAUSTED, or UNAVAILABLE while it
  drains or has not loaded its model yet): nothing was done, nothing is lost;
- refused: never accepted: no server was listening (the connection failed), or, with
  `stopping_since`, grpc-core turned the call away as the server stopped: a call that reached
  the transport after (or just before) the server began stopping is never handed to the
  service, and grpc ends it CANCELLED, not UNAVAILABLE (grpc/grpc#41785);
- failed: the server answered with another error status;
- lost: the transport broke after the call was sent (the server died or dropped the connection
  mid-call), so an accepted request may have gone unanswered.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass

import grpc
import numpy as np

OUTCOMES = ("answered", "shed", "refused", "failed", "lost")
# The server's UNAVAILABLE messages while it drains or loads (service.lifecycle).
REFUSALS = ("draining", "not loaded yet")
# Transport errors grpc reports as UNAVAILABLE or CANCELLED when a connection breaks mid-call.
BROKEN = ("socket closed", "connection reset", "broken pipe", "goaway", "received rst_stream")


@dataclass(frozen=True)
class Call:
    started: float  # time.monotonic(): the same clock in every process on this machine
    seconds: float
    code: str
    details: str

    @property
    def ended(self) -> float:
        return self.started + self.seconds

    @property
    def outcome(self) -> str:
        details = self.details.lower()
        if self.code == "OK":
            return "answered"
        refusal = self.code == "UNAVAILABLE" and any(r in details for r in REFUSALS)
        if self.code == "RESOURCE_EXHAUSTED" or refusal:
            return "shed"
        if self.code == "UNAVAILABLE" and "failed to connect" in details:
            return "refused"
        if self.code in ("UNAVAILABLE", "CANCELLED") and any(b in details for b in BROKEN):
            return "lost"
        return "failed"


async def timed(call) -> Call:
    """Await one RPC (a coroutine) and record how it ended."""
    started = time.monotonic()
    try:
        await call
        code, details = "OK", ""
    except grpc.aio.AioRpcError as e:
        code, details = e.code().name, e.details() or ""
    return Call(started, time.monotonic() - started, code, details)


def percentile_ms(seconds: list[float], p: float) -> float | None:
    return round(float(np.percentile(np.asarray(seconds) * 1000, p)), 2) if seconds else None


def turned_away_at_stop(call: Call, stopping_since: float | None) -> bool:
    """grpc-core's signature for a call it never handed to the service because the server was
    stopping: CANCELLED with no other detail, ended once the stop had begun. The callers here
    never cancel, and a call the service had begun would be answered within the drain grace."""
    return (
        stopping_since is not None
        and (call.code, call.details) == ("CANCELLED", "CANCELLED")
        and call.ended >= stopping_since
    )


def tally(calls: list[Call], stopping_since: float | None = None) -> dict:
    """Counts per outcome, p50/p99 of the answered and the shed ones, the codes behind failures;
    with `stopping_since` (when the server began stopping), how many grpc turned away then."""
    turned_away = [turned_away_at_stop(c, stopping_since) for c in calls]
    outcomes = ["refused" if t else c.outcome for c, t in zip(calls, turned_away, strict=True)]
    by_outcome: dict[str, list[float]] = {o: [] for o in OUTCOMES}
    for call, outcome in zip(calls, outcomes, strict=True):
        by_outcome[outcome].append(call.seconds)
    unexpected = Counter(
        f"{c.code}: {c.details[:80]}"
        for c, outcome in zip(calls, outcomes, strict=True)
        if outcome in ("failed", "lost")
    )
    shed = Counter(  # which limit refused: grpc's concurrency limit or the queue (~N ms queued)
        re.sub(r"\d+", "N", f"{c.code}: {c.details[:60]}") for c in calls if c.outcome == "shed"
    )
    return {
        "sent": len(calls),
        **{o: len(s) for o, s in by_outcome.items()},
        "answered_p50_ms": percentile_ms(by_outcome["answered"], 50),
        "answered_p99_ms": percentile_ms(by_outcome["answered"], 99),
        "shed_p50_ms": percentile_ms(by_outcome["shed"], 50),
        "shed_p99_ms": percentile_ms(by_outcome["shed"], 99),
        "failures": dict(unexpected.most_common(5)),
        "shed_reasons": dict(shed.most_common(3)),
        **({"turned_away_at_stop": sum(turned_away)} if stopping_since is not None else {}),
    }
