from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from pydantic import ValidationError

from service.errors import (
    INTERNAL_MESSAGE,
    DeadlineExceeded,
    ErrorKind,
    InvalidArgument,
    Overloaded,
    Unavailable,
)
from service.grpc_api.status import GRPC_CODES, grpc_status, status_details
from service.server import main as server_main
from service.settings import (
    GROUPS,
    EngineSettings,
    RoutingSettings,
    Settings,
    build_parser,
    load_settings,
    markdown_reference,
)

SETTINGS_START = "<!-- settings-reference:start -->"
SETTINGS_END = "<!-- settings-reference:end -->"


def test_env_then_cli_override(monkeypatch):
    monkeypatch.setenv("NLU_PORT", "6000")
    monkeypatch.setenv("NLU_MAX_BATCH_SIZE", "8")
    assert load_settings([]).server.port == 6000
    settings = load_settings(["--port", "7000", "--log-text"])
    assert settings.server.port == 7000 and settings.batching.max_batch_size == 8
    assert settings.security.log_text


def test_bad_values_are_rejected():
    with pytest.raises(ValidationError, match="max_batch_size"):
        load_settings(["--max-batch-size", "0"])
    with pytest.raises(ValidationError, match="variant"):
        load_settings(["--variant", "int4"])
    with pytest.raises(ValidationError):
        RoutingSettings(confidence_threshold=1.5)
    with pytest.raises(ValidationError, match="confidence_threshold"):
        Settings(routing={"confidence_threshold": 1.5})
    with pytest.raises(ValidationError, match="generator_mode=score needs"):
        load_settings(["--generator-mode", "score", "--generator-backend", "openai"])


def test_every_setting_is_documented_with_its_env_variable():
    names = [name for group in GROUPS.values() for name in group.model_fields]
    assert len(names) == len(set(names)), "a setting name is used by two groups"
    for group in GROUPS.values():
        for name, field in group.model_fields.items():
            assert field.description, name
    help_text = build_parser().format_help()
    assert "NLU_MAX_QUEUE_DELAY_MS" in help_text and "NLU_BUNDLE" in help_text
    assert set(Settings.model_fields) == set(GROUPS)


def test_invalid_settings_name_the_problem_without_echoing_values(monkeypatch, capsys):
    monkeypatch.setenv("NLU_GENERATOR_API_KEY", "supersecret")
    assert server_main(["--generator-mode", "score", "--generator-backend", "openai"]) == 2
    assert server_main(["--max-batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "generator_mode=score needs generator_backend=local" in err
    assert "batching.max_batch_size: Input should be greater than or equal to 1" in err
    assert "supersecret" not in err


def test_readme_settings_reference_is_up_to_date():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start, end = readme.index(SETTINGS_START), readme.index(SETTINGS_END)
    assert readme[start + len(SETTINGS_START) : end].strip() == markdown_reference().strip(), (
        "regenerate with: python -m service.settings --markdown"
    )


def test_groups_read_no_environment_of_their_own(monkeypatch):
    monkeypatch.setenv("NLU_VARIANT", "fp32")
    assert EngineSettings().variant is None  # a component's settings built in code
    assert Settings().engine.variant == "fp32"  # the server's settings read NLU_*


@pytest.mark.parametrize(
    ("exc", "code", "reason"),
    [
        (InvalidArgument("text is empty"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        (Overloaded("queue full", 0.5), grpc.StatusCode.RESOURCE_EXHAUSTED, "queue_full"),
        (DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"),
        (Unavailable("draining"), grpc.StatusCode.UNAVAILABLE, "unavailable"),
    ],
)
def test_typed_errors_map_to_status_codes(exc, code, reason):
    assert grpc_status(exc) == (code, str(exc), reason)


def test_unexpected_errors_become_internal_without_detail(caplog):
    code, message, reason = grpc_status(KeyError("secret internals"))
    assert code == grpc.StatusCode.INTERNAL and message == INTERNAL_MESSAGE
    assert "secret" not in message and reason == "internal"
    assert "secret internals" in caplog.text


def test_every_error_kind_has_a_grpc_code_and_details_carry_field_and_retry_hint():
    assert set(GRPC_CODES) == set(ErrorKind)
    (bad,) = status_details(InvalidArgument("text is empty", "requests[1].text"))
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert bad.field_violations[0].field == "requests[1].text"
    (retry,) = status_details(Overloaded("queue full", 0.25))
    assert retry.retry_delay.ToTimedelta().total_seconds() == 0.25
    assert status_details(InvalidArgument("no field")) == [] == status_details(KeyError("x"))
