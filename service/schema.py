"""Check a generator's answer against the label schema before it may replace the encoder's.

The generator is asked for `{"intent": "...", "slots": [{"name": "...", "value": "..."}]}`. The
intent must be a known label, every slot name a known slot type, and every value a substring of the
utterance (mapped to character offsets, left to right). Anything else is rejected with a reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from service.contract.types import Slot

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


class InvalidAnswer(ValueError):
    """The generated text does not fit the schema; `reason` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class GeneratedFrame:
    intent: str
    slots: list[Slot]


def extract_json(generated: str) -> dict:
    """The first {...} block of the text (models wrap JSON in prose or code fences)."""
    match = _JSON_OBJECT.search(generated)
    if match is None:
        raise InvalidAnswer("malformed_json", "no JSON object in the answer")
    try:
        answer = json.loads(match.group())
    except json.JSONDecodeError as e:
        raise InvalidAnswer("malformed_json", e.msg) from e
    if not isinstance(answer, dict):
        raise InvalidAnswer("malformed_json", "the answer is not a JSON object")
    return answer


def validate_choice(generated: str, options: list[str]) -> str:
    """The option a generated JSON answer names as its intent."""
    intent = extract_json(generated).get("intent")
    if not isinstance(intent, str) or intent not in options:
        raise InvalidAnswer("unknown_intent", f"{intent!r} is not one of {', '.join(options)}")
    return intent


def validate(
    generated: str, text: str, intents: Sequence[str], slot_types: Collection[str]
) -> GeneratedFrame:
    """The answer, if its intent is one of `intents` (those an in-scope answer may carry:
    `OpenWorld.in_scope_intents`, never a trained out-of-scope class) and its slots fit."""
    answer = extract_json(generated)
    intent = answer.get("intent")
    if not isinstance(intent, str) or intent not in intents:
        raise InvalidAnswer("unknown_intent", f"{intent!r} is not one of the model's intents")
    raw_slots = answer.get("slots", [])
    if not isinstance(raw_slots, list):
        raise InvalidAnswer("malformed_json", "'slots' is not a list")
    known = slot_types
    slots: list[Slot] = []
    search_from = 0
    lowered = text.lower()
    for raw in raw_slots:
        if not isinstance(raw, dict):
            raise InvalidAnswer("malformed_json", f"slot {raw!r} is not an object")
        name, value = raw.get("name"), raw.get("value")
        if not isinstance(name, str) or name not in known:
            raise InvalidAnswer("unknown_slot", f"{name!r} is not a known slot type")
        if not isinstance(value, str) or not value.strip():
            raise InvalidAnswer("invented_value", f"slot {name} has no value")
        value = value.strip()
        start = lowered.find(value.lower(), search_from)
        if start < 0:
            start = lowered.find(value.lower())
        if start < 0:
            raise InvalidAnswer("invented_value", f"{value!r} does not occur in the utterance")
        end = start + len(value)
        if any(start < s.end and s.start < end for s in slots):
            raise InvalidAnswer("overlapping_slots", f"{value!r} overlaps another slot")
        slots.append(Slot(name, text[start:end], start, end, 1.0))
        search_from = end
    slots.sort(key=lambda s: s.start)
    return GeneratedFrame(intent, slots)
