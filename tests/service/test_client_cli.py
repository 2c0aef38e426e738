"""The client's command line as a new user meets it: flags anywhere, one-line errors."""

from __future__ import annotations

import datetime

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from service.client import RETRIES, build_parser, main, next_wait_s, retry_hint_s


def test_connection_flags_are_accepted_before_or_after_the_subcommand():
    after = build_parser().parse_args(["parse", "hi", "--target", "h:1", "--timeout", "2"])
    before = build_parser().parse_args(["--target", "h:1", "--timeout", "2", "parse", "hi"])
    default = build_parser().parse_args(["parse", "hi"])
    assert (after.target, after.timeout) == (before.target, before.timeout) == ("h:1", 2.0)
    assert default.target == "localhost:50051"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["parse", "--top-k", "-1", "hi"], "argument --top-k: must be 0 or more, got -1"),
        (["batch", "/no/such/file.txt"], "error: /no/such/file.txt: No such file or directory"),
        (["--token-file", "/no/token", "info"], "error: /no/token: No such file or directory"),
        (["--tls-cert", "client.pem", "info"], "--tls-cert and --tls-key go together"),
        (["info", "--tls-key", "client.key"], "--tls-cert and --tls-key go together"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_naming_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--target", "127.0.0.1:1", "--timeout", "0.5"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err
    assert "Traceback" not in err


class Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, hint_s: float | None = None) -> None:
        self._code, self.hint_s = code, hint_s

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self):
        if self.hint_s is None:
            return ()
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromTimedelta(datetime.timedelta(seconds=self.hint_s))
        detail = any_pb2.Any()
        detail.Pack(info)
        status = status_pb2.Status(code=8, message="queue full", details=[detail])
        return (("grpc-status-details-bin", status.SerializeToString()),)


def test_retry_waits_honour_the_hint_the_attempts_and_the_deadline():
    exhausted = Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, hint_s=0.3)
    assert retry_hint_s(exhausted) == 0.3
    assert next_wait_s(exhausted, 0, remaining_s=5.0) >= 0.3  # at least the server's hint
    assert next_wait_s(exhausted, 0, remaining_s=0.2) is None  # would pass the deadline
    assert next_wait_s(exhausted, RETRIES, remaining_s=5.0) is None  # out of attempts
    assert 0 < next_wait_s(Refused(grpc.StatusCode.UNAVAILABLE), 1, 5.0) <= 0.1  # backoff
    assert next_wait_s(Refused(grpc.StatusCode.INVALID_ARGUMENT), 0, 5.0) is None
