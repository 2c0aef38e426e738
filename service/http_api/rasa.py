"""Rasa's external NLU contract: what `rasa run` posts when `endpoints.yml` names an `nlu: url:`
and the parse result it expects back (Rasa 3.6, `rasa/core/http_interpreter.py`; the keys are
`rasa/shared/nlu/constants.py`'s and `rasa/nlu/constants.py`'s).

Rasa posts `{"text", "message_id", "token"}` to `{url}/model/parse` (the token from its
EndpointConfig, null when none); it reads `intent {name, confidence}`, `entities [{entity,
start, end, value, confidence_entity, extractor}]` and `intent_ranking`. An out-of-scope
answer carries Rasa's fallback intent (`nlu_fallback`, what its FallbackClassifier answers and
rules match), first in the ranking as the FallbackClassifier puts it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import InvalidArgument
from service.gen.nlu.v1 import nlu_pb2

EXTRACTOR = "nlu-service"
RANKING = 10  # intents in intent_ranking, as Rasa's own classifiers return


def f32(value: float) -> float:
    """A float32 field as its shortest decimal (0.82923585, not 0.829235851764679), as the
    proto's JSON mapping writes it."""
    return float(str(np.float32(value)))


def parse_request(body: Any) -> tuple[nlu_pb2.ParseRequest, str | None]:
    """(the request, the token it carries) from Rasa's JSON body, or INVALID_ARGUMENT."""
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a JSON object with a `text`")
    text = body.get("text")
    if not isinstance(text, str):
        raise InvalidArgument("`text` must be a string", "text")
    message_id = body.get("message_id") or ""
    if not isinstance(message_id, str):
        raise InvalidArgument("`message_id` must be a string", "message_id")
    token = body.get("token")
    return (
        nlu_pb2.ParseRequest(text=text, request_id=message_id, top_k=RANKING),
        token if isinstance(token, str) and token else None,
    )


def parse_result(answer: nlu_pb2.ParseResponse, text: str, fallback_intent: str) -> dict:
    """Rasa's parse result for one of our answers."""
    intent = fallback_intent if answer.out_of_scope else answer.intent
    confidence = f32(answer.intent_confidence)
    ranking = [{"name": s.label, "confidence": f32(s.probability)} for s in answer.top_intents]
    if answer.out_of_scope or answer.from_extension:
        ranking = [{"name": intent, "confidence": confidence}, *ranking]
    return {
        "text": text,
        "intent": {"name": intent, "confidence": confidence},
        "entities": [
            {
                "entity": slot.name,
                "start": slot.start,
                "end": slot.end,
                "value": slot.value,
                "confidence_entity": f32(slot.confidence),
                "extractor": EXTRACTOR,
            }
            for slot in answer.slots
        ],
        "intent_ranking": ranking,
    }
