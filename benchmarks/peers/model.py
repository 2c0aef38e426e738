"""What a peer's model function does per batch, as our server does: tokenise → the bundle's ONNX
graph → decode to intent + slots (service.runtime.Engine, the same settings as `service.server`),
answered as one JSON document per utterance."""

from __future__ import annotations

import argparse
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


def server_arguments(doc: str) -> argparse.Namespace:
    """The command line every peer server takes (`benchmarks.peers.launch` passes it)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    return parser.parse_args()
