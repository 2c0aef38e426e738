"""Traces exported for real: a small OTLP/gRPC receiver (on the opentelemetry-proto stubs)
collects what the server sends while a Parse call over gRPC and one over HTTP carry the
caller's W3C trace context."""

from __future__ import annotations

import time

import httpx
import pytest

from benchmarks.chat_stub import Script, chat_server
from benchmarks.otlp_sink import SpanSink
from service.client import NluClient, request
from service.process import ServerProcess

GRPC_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HTTP_TRACE = "0af7651916cd43dd8448eb211c80319c"
GENERATOR_TRACE = "5b8efff798038103d269b633813fc60c"
TEXT = "show me flights from boston to denver"


@pytest.fixture
def receiver():
    sink = SpanSink().start()
    yield sink
    sink.stop()


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-00f067aa0ba902b7-01"


def wait_for(receiver: SpanSink, trace_id: str, names: set[str], timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        spans = receiver.of_trace(trace_id)
        if names <= {s.name for s in spans}:
            return spans
        time.sleep(0.1)
    raise AssertionError(f"{trace_id}: {sorted(s.name for s in receiver.of_trace(trace_id))}")


def test_a_parse_yields_its_stage_spans_under_the_callers_trace(tiny_bundle, tmp_path, receiver):
    srv = ServerProcess.launch(tiny_bundle, tmp_path / "log", http=True, env=receiver.environment())
    try:
        srv.wait_serving()
        with NluClient(srv.target) as nlu:
            metadata = [("traceparent", traceparent(GRPC_TRACE))]
            assert nlu.stub.Parse(request(TEXT), metadata=metadata, timeout=10).intent
        headers = {"traceparent": traceparent(HTTP_TRACE)}
        answer = httpx.post(f"{srv.http_url}/v1/parse", json={"text": TEXT}, headers=headers)
        assert answer.status_code == 200
        grpc_spans = wait_for(receiver, GRPC_TRACE, {"/nlu.v1.NluService/Parse", "queue", "route"})
        http_spans = wait_for(receiver, HTTP_TRACE, {"POST /v1/parse", "queue", "route"})
        for spans in (grpc_spans, http_spans):
            (queued,) = [s for s in spans if s.name == "queue"]
            (batch,) = [
                s for s in receiver.spans
                if s.name == "batch" and any(link.span_id == queued.span_id for link in s.links)
            ]  # fmt: skip
            stages = {s.name for s in receiver.spans if s.parent_span_id == batch.span_id}
            assert stages == {"tokenize", "infer", "decode"}
        assert receiver.services == {"nlu-service"}
        for span in receiver.spans:  # no attribute carries the utterance
            for attribute in span.attributes:
                assert TEXT not in str(attribute.value), (span.name, attribute.key)
    finally:
        assert srv.stop() == 0


def test_the_callers_trace_continues_to_the_generator_server(tiny_bundle, tmp_path, receiver):
    """Every request routed to an OpenAI-compatible generator (a scripted one): the call it
    receives carries the caller's trace id in `traceparent`, and the generate stage and the
    httpx client call are spans of that trace."""
    script = Script()
    with chat_server(script) as url:
        flags = ["--confidence-threshold", "1.0", "--generator-backend", "openai"]
        srv = ServerProcess.launch(
            tiny_bundle, tmp_path / "log", *flags, "--generator-base-url", url,
            env=receiver.environment(),
        )  # fmt: skip
        try:
            srv.wait_serving()
            with NluClient(srv.target) as nlu:
                metadata = [("traceparent", traceparent(GENERATOR_TRACE))]
                assert nlu.stub.Parse(request(TEXT), metadata=metadata, timeout=10).intent
            spans = wait_for(receiver, GENERATOR_TRACE, {"route", "generate"})
        finally:
            assert srv.stop() == 0
    (sent,) = script.headers
    assert sent["traceparent"].split("-")[1] == GENERATOR_TRACE
    (client_call,) = [s for s in spans if s.name.startswith("POST")]
    (generate,) = [s for s in spans if s.name == "generate"]
    assert client_call.parent_span_id == generate.span_id
    assert sent["traceparent"].split("-")[2] == client_call.span_id.hex()


def test_tracing_is_off_without_the_otel_variables():
    from service import tracing

    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp"})
