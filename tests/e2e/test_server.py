from __future__ import annotations

import math
import shutil
import signal
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

from benchmarks.chat_stub import Script, chat_server
from service.client import NluClient, request
from service.client import main as client_main
from service.gen.nlu.v1 import nlu_pb2, nlu_pb2_grpc
from service.process import ServerProcess, free_port

UTTERANCES = ["show me flights from boston to denver", "list airlines", "what is fare code h"]


def test_parse(client):
    response = client.parse(UTTERANCES[0], request_id="r-1", top_k=2)
    assert response.request_id == "r-1"
    assert response.source == nlu_pb2.SOURCE_ENCODER
    assert len(response.top_intents) == 2 and response.intent == response.top_intents[0].label
    assert 0 < response.intent_confidence <= 1
    assert response.model_version.startswith("atis-small-")
    assert response.timings.total_ms > 0 and response.timings.inference_ms > 0
    for slot in response.slots:
        assert UTTERANCES[0][slot.start : slot.end] == slot.value


def test_parse_batch_keeps_order(client):
    responses = client.parse_batch(UTTERANCES)
    single = [client.parse(u) for u in UTTERANCES]
    assert [r.intent for r in responses] == [r.intent for r in single]
    # An answer does not depend on its batch-mates: the int8 graph runs each utterance alone.
    assert [r.intent_confidence for r in responses] == [r.intent_confidence for r in single]
    assert [list(r.slots) for r in responses] == [list(r.slots) for r in single]


def test_stream_answers_in_request_order(client):
    texts = [f"flights from boston to city number {i}" for i in range(40)]
    responses = list(client.parse_stream(texts))
    assert [r.request_id for r in responses] == [str(i) for i in range(40)]


def test_model_info(client):
    info = client.info()
    assert info.quantization == "int8" and info.max_seq_len == 64
    assert info.execution_providers == ["CPUExecutionProvider"]
    assert "O" in info.slot_tags and len(info.intents) > 1
    assert len(info.bundle_sha256) == 64 and info.max_batch_items == 5


def test_cli_parse_and_health(server, capsys):
    assert client_main(["--target", server.target, "parse", "list airlines"]) == 0
    assert '"intent"' in capsys.readouterr().out
    assert client_main(["--target", server.target, "health"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert client_main(["--target", server.target, "health", "--wait", "5"]) == 0


def test_health_wait_gives_up_on_a_server_that_never_serves(capsys):
    with pytest.raises(SystemExit) as exit_:
        client_main(["--target", f"127.0.0.1:{free_port()}", "health", "--wait", "0.5"])
    assert exit_.value.code == 1 and "UNAVAILABLE" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.parse(""), "text is empty"),
        (lambda c: c.parse(" \t\n "), "text is empty or has no visible character"),
        (lambda c: c.parse("\u200b\u200c\u200d\ufeff"), "text is empty or has no visible"),
        (lambda c: c.parse("x" * 201), "text has 201 characters; the limit is 200"),
        (lambda c: c.parse_batch(["ok"] * 6), "6 requests in one batch; the limit is 5"),
        (lambda c: c.parse_batch([]), "requests is empty"),
        (lambda c: c.parse_batch(["ok", ""]), "request 1: text is empty"),
        (lambda c: c.parse("ok", threshold=1.5), "confidence_threshold 1.5 is outside [0, 1]"),
        (lambda c: c.parse("ok", threshold=math.nan), "confidence_threshold nan is outside"),
        (
            lambda c: c.stub.Parse(
                nlu_pb2.ParseRequest(text="ok", routing=nlu_pb2.RoutingOptions(policy=7))
            ),
            "routing.policy 7 is not a RoutingPolicy value",
        ),
        (
            lambda c: c.channel.unary_unary("/nlu.v1.NluService/Parse")(b"\x0a\x03\xff\xfe\x41"),
            "the request is not a valid protobuf message at text: Error parsing message",
        ),
    ],
)
def test_invalid_arguments_name_the_problem_and_the_server_keeps_serving(client, call, message):
    with pytest.raises(grpc.RpcError) as err:
        call(client)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert client.parse("list airlines").intent


def rich_details(error: grpc.RpcError) -> list:
    """The google.rpc details of a failed call, unpacked."""
    status = rpc_status.from_call(error)
    found = []
    for packed in status.details if status else []:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                found.append(detail)
    return found


def test_a_bad_batch_item_is_named_in_a_bad_request_detail(client):
    with pytest.raises(grpc.RpcError) as err:
        client.parse_batch(["ok", "ok", " "])
    (bad_request,) = rich_details(err.value)
    (violation,) = bad_request.field_violations
    assert violation.field == "requests[2].text"
    assert violation.description.startswith("request 2: text is empty or has no visible")


def test_a_bad_request_in_a_stream_gets_its_own_error_and_the_stream_goes_on(client):
    texts = ["list airlines", "", "show flights to denver", "\u200b\ufeff", "what is fare code h"]
    responses = list(client.parse_stream(texts))
    assert [r.request_id for r in responses] == ["0", "1", "2", "3", "4"]
    for i in (1, 3):
        assert responses[i].error.code == "INVALID_ARGUMENT" and not responses[i].intent
        assert "text is empty or has no visible character" in responses[i].error.message
        assert responses[i].error.field == "text"
    for i in (0, 2, 4):
        assert responses[i].intent and not responses[i].HasField("error")


def test_an_undecodable_message_in_a_stream_is_answered_with_the_field_named(client):
    good = nlu_pb2.ParseRequest(text="list airlines").SerializeToString()
    stream = client.channel.stream_stream(
        "/nlu.v1.NluService/ParseStream", response_deserializer=nlu_pb2.ParseResponse.FromString
    )
    responses = list(stream(iter([good, b"\x0a\x03\xff\xfe\x41", good]), timeout=10))
    assert [bool(r.intent) for r in responses] == [True, False, True]
    error = responses[1].error
    assert error.code == "INVALID_ARGUMENT" and error.field == "text"
    assert "not a valid protobuf message at text" in error.message


def test_bad_utf8_in_a_batch_names_the_item(client):
    good = nlu_pb2.ParseRequest(text="list airlines").SerializeToString()
    items = [good, good, b"\x0a\x03\xff\xfe\x41"]
    batch = b"".join(b"\x0a" + bytes([len(item)]) + item for item in items)
    with pytest.raises(grpc.RpcError) as err:
        client.channel.unary_unary("/nlu.v1.NluService/ParseBatch")(batch, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message at requests[2].text" in err.value.details()
    (bad_request,) = rich_details(err.value)
    assert bad_request.field_violations[0].field == "requests[2].text"


def test_a_fast_stream_is_flow_controlled_and_does_not_starve_unary_callers(client):
    """5,000 messages written as fast as possible: every one answered in order (no
    RESOURCE_EXHAUSTED from the shared queue), and unary calls keep being answered meanwhile."""
    texts = [f"flights from boston to denver number {i}" for i in range(5000)]
    answered: list[str] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            answered.extend(r.request_id for r in client.parse_stream(texts))
        except grpc.RpcError as e:
            failure.append(e)

    reader = threading.Thread(target=consume)
    reader.start()
    unary = []
    while reader.is_alive() and len(unary) < 50:
        unary.append(client.parse("list airlines").intent)
    reader.join(timeout=120)
    assert not failure, failure
    assert answered == [str(i) for i in range(5000)]
    assert unary and all(unary)


def test_reflection_lists_the_service(server):
    with grpc.insecure_channel(server.target) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "nlu.v1.NluService" in services and "grpc.health.v1.Health" in services


def test_reflection_can_be_turned_off(tiny_bundle, tmp_path):
    srv = ServerProcess.launch(tiny_bundle, tmp_path / "log", "--no-reflection")
    try:
        srv.wait_serving()
        with grpc.insecure_channel(srv.target) as channel, pytest.raises(grpc.RpcError) as err:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        assert srv.stop() == 0


def test_metrics_move(server, client):
    def scrape() -> str:
        return httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text

    def value(text: str, prefix: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(prefix)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    before = scrape()
    client.parse("list airlines")
    with pytest.raises(grpc.RpcError):
        client.parse("")
    with pytest.raises(grpc.RpcError):  # bad UTF-8: counted like any other invalid request
        client.channel.unary_unary("/nlu.v1.NluService/Parse")(b"\x0a\x03\xff\xfe\x41")
    after = scrape()
    ok = 'nlu_requests_total{code="OK",method="Parse"}'
    bad = 'nlu_requests_total{code="INVALID_ARGUMENT",method="Parse"}'
    assert value(after, ok) == value(before, ok) + 1
    assert value(after, bad) == value(before, bad) + 2
    assert value(after, 'nlu_route_total{source="encoder"}') >= 1
    for name in (
        "nlu_batch_size_count",
        'nlu_stage_duration_seconds_count{stage="inference"}',
        "nlu_queue_depth",
        "nlu_model_info{",
        "nlu_request_duration_seconds_bucket",
        'nlu_request_failure_total{reason="invalid_argument"}',
    ):
        assert name in after


def test_rpcs_over_the_concurrency_limit_are_refused_before_the_service_and_probes_still_pass(
    tiny_bundle, tmp_path
):
    health_port = free_port()
    srv = ServerProcess.launch(
        tiny_bundle, tmp_path / "log", "--max-concurrent-rpcs", "2",
        "--health-port", str(health_port),
    )  # fmt: skip
    srv.wait_serving(target=f"127.0.0.1:{health_port}")
    open_streams, release = [], threading.Event()

    def held_open() -> Iterator[nlu_pb2.ParseRequest]:
        yield request("list airlines")
        release.wait(30)

    try:
        client = NluClient(srv.target, retries=0)  # each refusal counted once
        for _ in range(2):  # two RPCs in flight: the limit
            stream = client.stub.ParseStream(held_open())
            next(stream)
            open_streams.append(stream)
        with pytest.raises(grpc.RpcError) as refused:
            client.parse("list airlines")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "more than 2 RPCs in flight" in refused.value.details()
        assert srv.metric('nlu_request_failure_total{reason="concurrency_limit"}') == 1
        assert srv.metric('nlu_requests_total{code="RESOURCE_EXHAUSTED",method="Parse"}') == 1
        assert client.health() == "SERVING"  # health on the main port is not limited
        assert NluClient(f"127.0.0.1:{health_port}").health() == "SERVING"
        release.set()
        for stream in open_streams:
            list(stream)
        assert client.parse("list airlines").intent  # room again
        client.close()
    finally:
        release.set()
        assert srv.stop() == 0


def test_a_failed_rpc_is_counted_once_whatever_its_size(tiny_bundle, tmp_path):
    srv = ServerProcess.launch(tiny_bundle, tmp_path / "log", "--max-queue-size", "2")
    try:
        srv.wait_serving()
        client = NluClient(srv.target, retries=0)  # each refusal counted once
        with pytest.raises(grpc.RpcError) as err:
            client.parse_batch(["list airlines"] * 3)  # 3 utterances never fit a queue of 2
        streamed = list(client.parse_stream(["list airlines", ""]))  # the stream itself is OK
        client.close()
        assert streamed[1].error.code == "INVALID_ARGUMENT"
        failures = 'nlu_request_failure_total{reason="%s"}'
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        (retry,) = rich_details(err.value)  # a client can back off by this much
        assert retry.retry_delay.ToTimedelta().total_seconds() > 0
        assert srv.metric(failures % "queue_full") == 1
        assert srv.metric(failures % "invalid_argument") == 1
        requests = 'nlu_requests_total{code="%s",method="%s"}'
        assert srv.metric(requests % ("RESOURCE_EXHAUSTED", "ParseBatch")) == 1
        assert srv.metric(requests % ("OK", "ParseStream")) == 1
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("log_text", [False, True])
def test_debug_access_log_includes_text_only_when_allowed(tiny_bundle, tmp_path, log_text):
    flags = ["--log-level", "DEBUG", "--log-text" if log_text else "--no-log-text"]
    srv = ServerProcess.launch(tiny_bundle, tmp_path / "log", *flags)
    try:
        srv.wait_serving()
        client = NluClient(srv.target)
        client.parse("my private utterance about denver", request_id="req-7")
        client.close()
    finally:
        assert srv.stop() == 0
    assert '"request_id": "req-7"' in srv.log()
    assert ("my private utterance" in srv.log()) is log_text


def test_a_health_only_port_answers_probes_and_nothing_else(tiny_bundle, tmp_path):
    health_port = free_port()
    srv = ServerProcess.launch(tiny_bundle, tmp_path / "log", "--health-port", str(health_port))
    try:
        srv.wait_serving()
        probe = NluClient(f"127.0.0.1:{health_port}")
        assert probe.health() == "SERVING"
        with pytest.raises(grpc.RpcError) as err:
            probe.parse("list airlines")
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        probe.close()
    finally:
        assert srv.stop() == 0


def test_sigterm_shows_not_serving_and_answers_until_it_stops(tiny_bundle, tmp_path):
    """During the notice health says NOT_SERVING (clients and probes move away) while a call
    that still arrives is answered, not refused; then the server stops and exits 0."""
    srv = ServerProcess.launch(  # the notice is capped by the grace: both long, however slow
        tiny_bundle, tmp_path / "log", "--drain-notice-s", "30", "--drain-grace-s", "60"
    )
    srv.wait_serving()
    client = NluClient(srv.target)
    srv.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while client.health() == "SERVING" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.health() == "NOT_SERVING"  # Check on the main port, not only Watch
    # A caller that does not watch health (the shipped config's does, and goes elsewhere).
    with grpc.insecure_channel(srv.target) as plain:
        assert nlu_pb2_grpc.NluServiceStub(plain).Parse(request("list airlines")).intent
    client.close()
    assert srv.process.wait(timeout=60) == 0
    assert '"msg": "draining"' in srv.log() and '"msg": "stopped"' in srv.log()


def test_a_drain_closes_health_watches_instead_of_waiting_for_them(tiny_bundle, tmp_path):
    """Clients that watch health (the shipped service config) hold a stream open forever: the
    drain ends it once the nlu.v1 calls are done, rather than waiting out drain_grace_s."""
    srv = ServerProcess.launch(
        tiny_bundle, tmp_path / "log", "--drain-notice-s", "0", "--drain-grace-s", "300"
    )
    srv.wait_serving()
    channel = grpc.insecure_channel(srv.target)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    srv.process.send_signal(signal.SIGTERM)
    assert srv.process.wait(timeout=120) == 0  # well inside the 300 s grace
    channel.close()


@pytest.mark.slow
def test_the_encoder_serves_while_the_real_generator_loads(tiny_bundle, tmp_path):
    """SmolLM2 takes tens of seconds to load on a CPU: the encoder serves at once, routed
    requests fall back with their own reason until it is ready, and info and metrics say so."""
    srv = ServerProcess.launch(tiny_bundle, tmp_path / "log", "--generator-backend", "local")
    try:
        srv.wait_serving()
        client = NluClient(srv.target)
        routed = client.parse("show flights to denver", policy="generator")
        info = client.info()
        client.close()
        assert routed.fallback_reason == "generator_loading" and routed.intent
        assert info.routing.generator_backend == "local" and not info.routing.generator_ready
        assert info.routing.generator_model.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
        assert srv.metric("nlu_generator_ready") == 0
    finally:
        assert srv.stop(timeout_s=30) == 0


def test_health_goes_from_not_serving_to_serving(tiny_bundle, tmp_path):
    srv = ServerProcess.launch(
        tiny_bundle, tmp_path / "log", "--warmup-batches", "400", "--max-batch-size", "16"
    )
    try:
        seen = srv.wait_serving()
    finally:
        assert srv.stop() == 0
    assert seen == ["NOT_SERVING", "SERVING"]


def test_sigterm_answers_every_in_flight_request_and_exits_zero(tiny_bundle, tmp_path):
    srv = ServerProcess.launch(
        tiny_bundle,
        tmp_path / "log",
        "--max-batch-items",
        "200",
        "--max-queue-size",
        "5000",
        "--max-queue-wait-ms",
        "0",  # 2,000 utterances queued at once: on a busy CPU that is seconds of work
        "--drain-grace-s",
        "30",
    )
    srv.wait_serving()
    channel = grpc.insecure_channel(srv.target)
    stub = nlu_pb2_grpc.NluServiceStub(channel)
    batch = nlu_pb2.ParseBatchRequest(
        requests=[request(f"flights from boston to denver number {i}") for i in range(200)]
    )
    futures = [stub.ParseBatch.future(batch, timeout=60) for _ in range(10)]
    time.sleep(0.2)
    in_flight = sum(not f.done() for f in futures)
    code = srv.stop()
    results = [f.result() for f in futures]
    channel.close()
    assert in_flight > 0, "nothing was in flight at SIGTERM; the test proves nothing"
    assert all(len(r.responses) == 200 for r in results)
    assert code == 0
    assert '"msg": "draining"' in srv.log() and '"msg": "stopped"' in srv.log()


def test_a_tampered_bundle_is_refused_with_the_file_named(tiny_bundle, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    with (bundle / "labels.json").open("a") as f:
        f.write(" ")
    srv = ServerProcess.launch(bundle, tmp_path / "log")
    assert srv.process.wait(timeout=60) == 1
    assert "labels.json: sha256 does not match" in srv.log()


def test_bad_settings_exit_2_naming_the_field(tiny_bundle, tmp_path):
    srv = ServerProcess.launch(tiny_bundle, tmp_path / "log", "--max-batch-size", "0")
    assert srv.process.wait(timeout=60) == 2
    assert "max_batch_size" in srv.log()


def test_generator_fallback_through_an_openai_compatible_server(tiny_bundle, tmp_path):
    good = '{"intent": "atis_flight", "slots": [{"name": "toloc.city_name", "value": "denver"}]}'
    script = Script(content=good)
    with chat_server(script) as url:
        srv = ServerProcess.launch(
            tiny_bundle,
            tmp_path / "log",
            "--generator-backend",
            "openai",
            "--generator-base-url",
            url,
            "--generator-model",
            "smol",
            "--confidence-threshold",
            "1.0",
            "--return-generated-text",
        )
        try:
            srv.wait_serving()
            client = NluClient(srv.target)
            routed = client.parse("show flights to denver")
            encoder = client.parse("show flights to denver", policy="encoder")
            script.content = "no json here"
            rejected = client.parse("show flights to denver")
            info = client.info()
            client.close()
        finally:
            assert srv.stop() == 0
    assert routed.source == nlu_pb2.SOURCE_GENERATOR and routed.intent == "atis_flight"
    assert [(s.name, s.value, s.start, s.end) for s in routed.slots] == [
        ("toloc.city_name", "denver", 16, 22)
    ]
    assert routed.timings.generator_ms > 0 and routed.generated_text == good
    assert routed.encoder_intent and 0 < routed.encoder_confidence <= 1
    assert encoder.source == nlu_pb2.SOURCE_ENCODER and encoder.fallback_reason == ""
    assert rejected.source == nlu_pb2.SOURCE_ENCODER
    assert rejected.fallback_reason == "malformed_json"
    assert rejected.intent == rejected.encoder_intent
    assert info.routing.generator_enabled and info.routing.generator_backend == "openai"
    assert len(script.requests) == 2  # the encoder-only request never reached the generator
    messages = script.requests[0]["messages"]
    assert messages[0]["role"] == "system" and "atis_flight" in messages[0]["content"]
    assert len(messages) == 2 + 2 * 4  # NLU_RETRIEVAL_K=4 training examples as solved turns
    assert messages[-1]["content"].endswith('Utterance: "show flights to denver"')


def test_in_process_generator_never_fails_a_request(tiny_bundle, tiny_lm, tmp_path):
    srv = ServerProcess.launch(
        tiny_bundle,
        tmp_path / "log",
        "--generator-backend",
        "local",
        "--generator-model",
        str(tiny_lm),
        "--generator-max-tokens",
        "8",
        "--confidence-threshold",
        "1.0",
    )
    try:
        srv.wait_serving()
        client = NluClient(srv.target, timeout_s=30)
        deadline = time.monotonic() + 60  # the generator loads after the encoder serves
        while not client.info().routing.generator_ready and time.monotonic() < deadline:
            time.sleep(0.05)
        responses = [client.parse(t) for t in UTTERANCES]
        info = client.info()
        client.close()
    finally:
        assert srv.stop() == 0
    for response in responses:  # a random LM writes no valid frame: the encoder answers
        assert response.source == nlu_pb2.SOURCE_ENCODER
        assert response.fallback_reason in {
            "malformed_json",
            "unknown_intent",
            "unknown_slot",
            "invented_value",
        }
        assert response.timings.generator_ms > 0
    assert info.routing.generator_backend == "local" and info.routing.generator_ready
    assert info.routing.generator_model == str(tiny_lm)
    assert (info.routing.generator_mode, info.routing.generator_prompt) == ("generate", "few_shot")
