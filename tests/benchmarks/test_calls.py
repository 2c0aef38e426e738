"""How the reliability figures count a call: the outcome from the client's side."""

from benchmarks.load.calls import Call, tally

ANSWERED = Call(0.0, 0.005, "OK", "")
NO_LISTENER = Call(1.2, 0.001, "UNAVAILABLE", "failed to connect to all addresses; last error: x")
DRAINING = Call(0.5, 0.001, "UNAVAILABLE", "server is draining")
AT_STOP = Call(1.003, 0.001, "CANCELLED", "CANCELLED")  # ended once the stop had begun
BEFORE_STOP = Call(0.5, 0.001, "CANCELLED", "CANCELLED")
BROKEN = Call(0.9, 0.2, "UNAVAILABLE", "Socket closed")


def test_outcomes_from_codes():
    outcomes = [c.outcome for c in (ANSWERED, NO_LISTENER, DRAINING, BEFORE_STOP, BROKEN)]
    assert outcomes == ["answered", "refused", "shed", "failed", "lost"]


def test_grpc_turning_a_call_away_at_stop_is_a_refusal_not_a_failure():
    """grpc/grpc#41785: a call grpc-core never handed to the service because the server was
    stopping ends CANCELLED; once the stop has begun, that is a refusal (nothing was done)."""
    calls = [ANSWERED, AT_STOP, BEFORE_STOP, NO_LISTENER]
    row = tally(calls, stopping_since=1.0)
    assert (row["answered"], row["refused"], row["failed"]) == (1, 2, 1)
    assert row["turned_away_at_stop"] == 1
    assert row["failures"] == {"CANCELLED: CANCELLED": 1}  # the one before the stop still counts


def test_without_a_stop_every_cancelled_call_is_a_failure():
    row = tally([ANSWERED, AT_STOP])
    assert (row["failed"], row["refused"]) == (1, 0) and "turned_away_at_stop" not in row
