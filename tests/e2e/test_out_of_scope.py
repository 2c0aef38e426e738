"""Out-of-scope answers over gRPC: explicit flag, the configured fallback intent, never the
dataset's own label, and GetModelInfo saying how it is decided."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client import NluClient
from service.gen.nlu.v1 import nlu_pb2
from service.process import ServerProcess
from service.runtime import Engine
from service.settings import EngineSettings, OpenWorldSettings
from tests.conftest import SHARED_CLINC

FALLBACK = "nlu_fallback"


def texts(small_clinc: Path) -> list[str]:
    """The tiny model's own training utterances, in-scope and out-of-scope, and some real
    CLINC150 test utterances of intents it never saw."""
    rows = [json.loads(line) for line in (small_clinc / "train.jsonl").open()]
    unseen = [json.loads(line) for line in (SHARED_CLINC / "test.jsonl").open()]
    return [r["text"] for r in rows[::5] + unseen[::500]]


@pytest.fixture(scope="module")
def clinc_client(tiny_clinc_bundle: Path, tmp_path_factory) -> Iterator[NluClient]:
    log_path = tmp_path_factory.mktemp("oos") / "server.log"
    srv = ServerProcess.launch(
        tiny_clinc_bundle,
        log_path,
        "--intra-op-threads",
        "1",
        "--out-of-scope-intent",
        FALLBACK,
    )
    srv.wait_serving()
    client = NluClient(srv.target)
    yield client
    client.close()
    srv.stop()


def test_out_of_scope_answers_are_explicit(clinc_client, tiny_clinc_bundle, small_clinc):
    engine = Engine(
        tiny_clinc_bundle,
        settings=EngineSettings(intra_op_threads=1),
        open_world=OpenWorldSettings(out_of_scope_intent=FALLBACK),
    )
    utterances = texts(small_clinc)
    expected = engine.parse(utterances)
    assert 0 < sum(f.out_of_scope for f in expected) < len(expected)  # both kinds are tested
    for text, frame in zip(utterances, expected, strict=True):
        response = clinc_client.parse(text, top_k=200)
        assert response.out_of_scope == frame.out_of_scope, text
        assert response.in_scope_score == pytest.approx(frame.in_scope_score, abs=1e-5)
        labels = [s.label for s in response.top_intents]
        assert "oos" not in labels and response.intent != "oos"
        assert FALLBACK in labels  # the trained class, under the configured name
        if frame.out_of_scope:
            assert response.intent == FALLBACK
            assert response.source == nlu_pb2.SOURCE_ENCODER
            guess = max(
                (s for s in response.top_intents if s.label != FALLBACK),
                key=lambda s: s.probability,
            )
            assert response.intent_confidence == pytest.approx(1 - guess.probability, abs=1e-5)
            # the encoder's own answer: what it guessed in scope, not the out-of-scope intent
            assert response.encoder_intent == guess.label
            assert response.encoder_confidence == pytest.approx(guess.probability, abs=1e-5)
        else:
            assert response.intent == labels[0] != FALLBACK


def test_model_info_says_how_out_of_scope_is_decided(clinc_client, tiny_clinc_bundle):
    record = json.loads((tiny_clinc_bundle / "config.json").read_text())["out_of_scope"]
    info = clinc_client.info()
    assert info.out_of_scope.method == record["method"]
    assert info.out_of_scope.HasField("threshold") == (record["threshold"] is not None)
    assert info.out_of_scope.intent == FALLBACK
    assert info.out_of_scope.trained_label == "oos"
    assert info.out_of_scope.chosen_by == record["chosen_by"]
    assert info.out_of_scope.HasField("false_rejection_budget") == info.out_of_scope.HasField(
        "threshold"
    )
    if info.out_of_scope.HasField("threshold"):
        assert info.out_of_scope.false_rejection_budget == record["in_scope_budget"]
    assert FALLBACK in info.intents and "oos" not in info.intents
