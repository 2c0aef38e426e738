"""The client's command line as a new user meets it: flags anywhere, one-line errors."""

from __future__ import annotations

import pytest

from service.client import build_parser, main


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
