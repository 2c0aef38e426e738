"""What a peer's model function does per batch, as our server does: tokenise → the bundle's ONNX
graph → decode to intent + slots (service.runtime.Engine, the same settings as `service.server`),
answered as one JSON document per utterance."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from service.contract.types import Frame
from service.runtime import Engine
from service.settings import EngineSettings


def load_engine(bundle: Path) -> Engine:
    return Engine(bundle, settings=EngineSettings())


def frame_json(frame: Frame) -> bytes:
    return json.dumps(
        {
            "intent": frame.intent,
            "confidence": round(frame.confidence, 6),
            "slots": [
                {"slot": s.name, "value": s.value, "start": s.start, "end": s.end}
                for s in frame.slots
            ],
        }
    ).encode()


def answer(engine: Engine, texts: Sequence[str]) -> list[bytes]:
    return [frame_json(frame) for frame in engine.parse(texts)]
