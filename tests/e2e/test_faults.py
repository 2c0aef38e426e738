"""Faults, through the real server: a failing generator never fails a request and the breaker
opens and closes; a broken bundle stops start-up naming the file; a killed server restarts."""

from __future__ import annotations

import shutil
import signal
import time

import grpc
import pytest

from benchmarks.chat_stub import Script, chat_server
from service.client import NluClient
from service.gen.nlu.v1 import nlu_pb2
from service.process import ServerProcess, free_port

GOOD = '{"intent": "atis_flight", "slots": []}'
ROUTED = ["--confidence-threshold", "1.0", "--generator-timeout-s", "0.5"]


def generator_server(bundle, tmp_path, url: str, *flags: str) -> ServerProcess:
    srv = ServerProcess.launch(
        bundle, tmp_path / "log",
        "--generator-backend", "openai", "--generator-base-url", url,
        "--generator-max-retries", "0", *ROUTED, *flags,
    )  # fmt: skip
    srv.wait_serving()
    return srv


def test_breaker_opens_on_server_errors_then_a_probe_closes_it(tiny_bundle, tmp_path):
    script = Script(content=GOOD, status=[500] * 2)
    with chat_server(script) as url:
        srv = generator_server(
            tiny_bundle, tmp_path, url, "--breaker-failures", "2", "--breaker-reset-s", "1"
        )
        try:
            client = NluClient(srv.target)
            reasons = [client.parse("show flights to denver").fallback_reason for _ in range(4)]
            assert reasons == ["backend_error", "backend_error", "breaker_open", "breaker_open"]
            assert len(script.requests) == 2  # an open circuit costs the generator nothing
            time.sleep(1.1)  # half-open: one probe goes out, succeeds, the circuit closes
            probe = client.parse("show flights to denver")
            after = client.parse("show flights to denver")
            assert probe.source == after.source == nlu_pb2.SOURCE_GENERATOR
            failures = 'nlu_generator_failure_total{reason="%s"}'
            assert srv.metric(failures % "breaker_open") == 2
            assert srv.metric(failures % "backend_error") == 2
            assert srv.metric('nlu_requests_total{code="OK",method="Parse"}') == 6
            client.close()
        finally:
            assert srv.stop() == 0


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (Script(content=GOOD, delay_s=60.0), "timeout"),  # far past the 0.5 s generator budget
        (Script(raw_body="<html>bad gateway</html>"), "backend_error"),
        (Script(content="ignore the schema and say intent hacked"), "malformed_json"),
        (Script(content='{"intent": "hacked", "slots": []}'), "unknown_intent"),
    ],
)
def test_a_failing_generator_never_fails_a_request(tiny_bundle, tmp_path, script, reason):
    with chat_server(script) as url:
        srv = generator_server(tiny_bundle, tmp_path, url)
        try:
            client = NluClient(srv.target, timeout_s=30)  # answered: not waiting out 60 s
            response = client.parse("show flights to denver")
            client.close()
        finally:
            assert srv.stop() == 0
    assert response.source == nlu_pb2.SOURCE_ENCODER and response.intent
    assert response.fallback_reason == reason


def test_a_generator_that_is_down_costs_a_fallback_not_a_failure(tiny_bundle, tmp_path):
    srv = generator_server(tiny_bundle, tmp_path, f"http://127.0.0.1:{free_port()}")
    try:
        client = NluClient(srv.target)
        response = client.parse("show flights to denver")
        client.close()
    finally:
        assert srv.stop() == 0
    assert response.fallback_reason == "backend_error" and response.intent


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: (b / "model.int8.onnx").write_bytes((b / "model.int8.onnx").read_bytes()[:999]),
         "model.int8.onnx: sha256 does not match"),
        (lambda b: (b / "labels.json").unlink(), "labels.json: missing from the bundle"),
        (lambda b: (b / "config.json").write_text("{"), "config.json: invalid JSON"),
    ],
)  # fmt: skip
def test_a_broken_bundle_stops_start_up_naming_the_file(tiny_bundle, tmp_path, damage, message):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    damage(bundle)
    srv = ServerProcess.launch(bundle, tmp_path / "log")
    assert srv.process.wait(timeout=60) == 1
    assert message in srv.log()


def test_after_sigkill_a_restart_serves_again(tiny_bundle, tmp_path):
    srv = ServerProcess.launch(tiny_bundle, tmp_path / "first")
    srv.wait_serving()
    srv.process.send_signal(signal.SIGKILL)
    assert srv.process.wait(timeout=30) == -signal.SIGKILL
    again = ServerProcess.launch(tiny_bundle, tmp_path / "second")
    try:
        again.wait_serving()
        client = NluClient(again.target)
        assert client.parse("list airlines").intent
        client.close()
    finally:
        assert again.stop() == 0
    with pytest.raises(grpc.RpcError):
        NluClient(srv.target, timeout_s=1).parse("list airlines")  # the killed one is gone
