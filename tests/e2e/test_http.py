"""The HTTP/JSON front end against the real server over real sockets: the same answers as gRPC
(one core), the proto's JSON mapping, errors in the error table, limits, probes and drain."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format

from service.client import NluClient
from service.gen.nlu.v1 import nlu_pb2
from service.process import ServerProcess


@pytest.fixture(scope="module")
def http_server(tiny_bundle: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("http") / "server.log"
    srv = ServerProcess.launch(
        tiny_bundle, log_path, "--intra-op-threads", "1", "--max-batch-items", "4",
        "--http-max-body-bytes", "4096", http=True,
    )  # fmt: skip
    srv.wait_serving()
    yield srv
    assert srv.stop() == 0


@pytest.fixture
def http(http_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_server.http_url, timeout=30) as c:
        yield c


def without_timings(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "timings"}


def test_parse_answers_what_grpc_answers_in_the_proto_json_mapping(http_server, http):
    text = "show me flights from boston to denver"
    got = http.post("/v1/parse", json={"text": text, "requestId": "r1", "topK": 2})
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    body = got.json()
    grpc_client = NluClient(http_server.target)
    expected = json_format.MessageToDict(
        grpc_client.stub.Parse(nlu_pb2.ParseRequest(text=text, request_id="r1", top_k=2)),
        always_print_fields_with_no_presence=True,
    )
    grpc_client.close()
    assert without_timings(body) == without_timings(expected)
    assert body["requestId"] == "r1" and len(body["topIntents"]) == 2
    assert body["outOfScope"] is False  # every field, defaults included
    assert body["timings"]["totalMs"] > 0
    snake = http.post("/v1/parse", json={"text": text, "request_id": "r2"})  # either spelling
    assert snake.status_code == 200 and snake.json()["requestId"] == "r2"


def test_batch_keeps_order_and_model_info_matches_grpc(http_server, http):
    texts = ["list airlines", "show me flights to denver", "what is the fare"]
    items = [{"text": t, "requestId": str(i)} for i, t in enumerate(texts)]
    got = http.post("/v1/parse:batch", json={"requests": items})
    assert got.status_code == 200
    answers = got.json()["responses"]
    assert [a["requestId"] for a in answers] == ["0", "1", "2"]
    one_by_one = [http.post("/v1/parse", json=item).json() for item in items]
    assert [a["intent"] for a in answers] == [a["intent"] for a in one_by_one]
    info = http.get("/v1/model")
    grpc_client = NluClient(http_server.target)
    expected = json_format.MessageToDict(
        grpc_client.info(), always_print_fields_with_no_presence=True
    )
    grpc_client.close()
    assert info.status_code == 200 and info.json() == expected


@pytest.mark.parametrize(
    ("path", "body", "status", "names"),
    [
        ("/v1/parse", b"{not json", 400, "ParseRequest in JSON"),
        ("/v1/parse", b'{"text": "hi", "colour": 1}', 400, "colour"),
        ("/v1/parse", b"\xff\xfe", 400, "not UTF-8"),
        ("/v1/parse", b'{"text": ""}', 400, "text"),
        ("/v1/parse", b'{"text": "hi", "routing": {"policy": 9}}', 400, "routing.policy"),
        ("/v1/parse:batch", b'{"requests": [' + b'{"text": "a"},' * 4 + b'{"text": "a"}]}', 400,
         "5"),
        ("/v1/parse", b'{"text": "' + b"a" * 5000 + b'"}', 413, "http_max_body_bytes"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_json_error_naming_the_problem(http, path, body, status, names):
    got = http.post(path, content=body, headers={"content-type": "application/json"})
    assert got.status_code == status, got.text
    error = got.json()["error"]
    assert error["code"] == status and error["status"] == "INVALID_ARGUMENT"
    assert names in error["message"] or names == error.get("field"), error
    assert http.post("/v1/parse", json={"text": "list airlines"}).status_code == 200  # serving


@pytest.mark.parametrize("path", ["/v1/parse", "/model/parse"])
def test_the_callers_deadline_travels_in_x_server_timeout(http, path):
    text = {"text": "show me flights from boston to denver"}
    assert http.post(path, json=text, headers={"X-Server-Timeout": "30"}).status_code == 200
    past = http.post(path, json=text, headers={"X-Server-Timeout": "0.000001"})
    assert past.status_code == 504 and past.json()["error"]["status"] == "DEADLINE_EXCEEDED"
    for bad in ("soon", "0", "-1", "nan"):
        refused = http.post(path, json=text, headers={"X-Server-Timeout": bad})
        assert (
            refused.status_code == 400 and "X-Server-Timeout" in refused.json()["error"]["message"]
        ), bad


def test_unknown_routes_and_methods_are_refused(http):
    assert http.get("/v1/parse").status_code == 405
    assert http.post("/v2/parse", json={"text": "hi"}).status_code == 404


def test_probes_and_metrics(http_server, http):
    assert http.get("/healthz").json() == {"status": "alive"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "SERVING"}
    before = http_server.metric('nlu_requests_total{code="200",method="POST /v1/parse"}')
    http.post("/v1/parse", json={"text": "list airlines"})
    after = http_server.metric('nlu_requests_total{code="200",method="POST /v1/parse"}')
    assert after == before + 1


def test_a_full_queue_answers_429_with_retry_after(tiny_bundle, tmp_path):
    srv = ServerProcess.launch(tiny_bundle, tmp_path / "log", "--max-queue-size", "2", http=True)
    try:
        srv.wait_serving()
        batch = {"requests": [{"text": "list airlines"}] * 3}  # never fits a queue of 2
        got = httpx.post(f"{srv.http_url}/v1/parse:batch", json=batch, timeout=30)
        assert got.status_code == 429 and int(got.headers["retry-after"]) >= 1
        assert got.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert got.json()["error"]["retryAfterS"] > 0
        assert srv.metric('nlu_request_failure_total{reason="queue_full"}') == 1
    finally:
        assert srv.stop() == 0


def test_drain_turns_readyz_503_while_calls_are_still_answered(tiny_bundle, tmp_path):
    srv = ServerProcess.launch(
        tiny_bundle, tmp_path / "log", "--drain-notice-s", "10", "--drain-grace-s", "20", http=True
    )  # a notice long enough for a busy machine to see readyz turn and still be answered
    srv.wait_serving()
    with httpx.Client(base_url=srv.http_url, timeout=10) as http:
        assert http.get("/readyz").status_code == 200
        srv.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while http.get("/readyz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert http.get("/readyz").json() == {"status": "NOT_SERVING"}
        assert http.post("/v1/parse", json={"text": "list airlines"}).status_code == 200
    assert srv.process.wait(timeout=30) == 0


# Rasa 3.6's contract, from its source: `rasa/core/http_interpreter.py` posts
# {"token", "text", "message_id"} to {url}/model/parse; the parse result keys are
# rasa/shared/nlu/constants.py's TEXT, INTENT (INTENT_NAME_KEY, PREDICTED_CONFIDENCE_KEY),
# ENTITIES (ENTITY_ATTRIBUTE_TYPE/START/END/VALUE, EXTRACTOR) and INTENT_RANKING_KEY, with
# rasa/nlu/constants.py's ENTITY_ATTRIBUTE_CONFIDENCE_TYPE ("confidence_entity").
RASA_RESULT_KEYS = {"text", "intent", "entities", "intent_ranking"}
RASA_ENTITY_KEYS = {"entity", "start", "end", "value", "confidence_entity", "extractor"}


def test_rasa_model_parse_answers_rasas_parse_result(http):
    text = "show me flights from boston to denver"
    got = http.post("/model/parse", json={"text": text, "message_id": "conv-1", "token": None})
    assert got.status_code == 200
    result = got.json()
    assert set(result) == RASA_RESULT_KEYS and result["text"] == text
    assert set(result["intent"]) == {"name", "confidence"}
    ours = http.post("/v1/parse", json={"text": text, "topK": 10}).json()
    assert result["intent"]["name"] == ours["intent"]
    assert result["intent"]["confidence"] == pytest.approx(ours["intentConfidence"], abs=1e-6)
    assert [r["name"] for r in result["intent_ranking"]] == [s["label"] for s in ours["topIntents"]]
    assert len(result["entities"]) == len(ours["slots"]) > 0
    for entity, slot in zip(result["entities"], ours["slots"], strict=True):
        assert set(entity) == RASA_ENTITY_KEYS and entity["extractor"] == "nlu-service"
        assert (entity["entity"], entity["value"]) == (slot["name"], slot["value"])
        assert text[entity["start"] : entity["end"]] == entity["value"]


@pytest.mark.parametrize(
    ("body", "names"),
    [(b"[1]", "JSON object"), (b'{"text": 3}', "text"), (b"{", "not JSON"), (b'{"text": ""}', "")],
)
def test_rasa_model_parse_refuses_bad_bodies(http, body, names):
    got = http.post("/model/parse", content=body)
    assert got.status_code == 400 and names in got.json()["error"]["message"]
