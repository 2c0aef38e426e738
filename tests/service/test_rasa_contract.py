"""Rasa's parse-result contract, pinned field by field. The field list comes from Rasa 3.6.21's
source: `rasa/core/http_interpreter.py` (what it posts: token, text, message_id) and the keys of
`rasa/shared/nlu/constants.py` (TEXT, INTENT with INTENT_NAME_KEY and PREDICTED_CONFIDENCE_KEY,
ENTITIES with ENTITY_ATTRIBUTE_TYPE/START/END/VALUE and EXTRACTOR, INTENT_RANKING_KEY) and
`rasa/nlu/constants.py` (ENTITY_ATTRIBUTE_CONFIDENCE_TYPE = "confidence_entity")."""

from __future__ import annotations

import pytest

from service.errors import InvalidArgument
from service.gen.nlu.v1 import nlu_pb2
from service.http_api.rasa import parse_request, parse_result


def answer(**fields) -> nlu_pb2.ParseResponse:
    return nlu_pb2.ParseResponse(
        intent="flight",
        intent_confidence=0.75,
        top_intents=[nlu_pb2.IntentScore(label="flight", probability=0.75)],
        slots=[nlu_pb2.Slot(name="toloc", value="denver", start=3, end=9, confidence=0.5)],
        **fields,
    )


def test_an_answer_becomes_rasas_parse_result():
    assert parse_result(answer(), "to denver", "nlu_fallback") == {
        "text": "to denver",
        "intent": {"name": "flight", "confidence": 0.75},
        "entities": [
            {
                "entity": "toloc",
                "start": 3,
                "end": 9,
                "value": "denver",
                "confidence_entity": 0.5,
                "extractor": "nlu-service",
            }
        ],
        "intent_ranking": [{"name": "flight", "confidence": 0.75}],
    }


def test_out_of_scope_is_rasas_fallback_intent_first_in_the_ranking():
    result = parse_result(answer(out_of_scope=True), "sing to me", "nlu_fallback")
    assert result["intent"]["name"] == "nlu_fallback"
    assert [r["name"] for r in result["intent_ranking"]] == ["nlu_fallback", "flight"]


def test_rasas_request_as_it_posts_it():
    request, token = parse_request({"token": None, "text": "hi", "message_id": "conv-7"})
    assert (request.text, request.request_id, token) == ("hi", "conv-7", None)
    assert parse_request({"text": "hi", "token": "s3cret"})[1] == "s3cret"
    with pytest.raises(InvalidArgument, match="text"):
        parse_request({"message_id": "x"})
