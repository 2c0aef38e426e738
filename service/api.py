"""The nlu.v1 messages ⇄ the core's types, for every front end: gRPC sends the messages as
protobuf, HTTP as their JSON mapping (`google.protobuf.json_format`), so the two APIs cannot
drift. Also what a call does beyond the core: the batch limit, `total_ms`, the model info."""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from service.contract.types import ParseInput, ParseResult, Policy, Source
from service.core import NluCore
from service.errors import InvalidArgument
from service.gen.nlu.v1 import nlu_pb2
from service.model_info import describe
from service.validation import check_batch_size

POLICIES = {
    nlu_pb2.ROUTING_POLICY_DEFAULT: Policy.DEFAULT,
    nlu_pb2.ROUTING_POLICY_ENCODER_ONLY: Policy.ENCODER_ONLY,
    nlu_pb2.ROUTING_POLICY_GENERATOR_ONLY: Policy.GENERATOR_ONLY,
}
SOURCES = {Source.ENCODER: nlu_pb2.SOURCE_ENCODER, Source.GENERATOR: nlu_pb2.SOURCE_GENERATOR}


def to_input(request: nlu_pb2.ParseRequest) -> ParseInput:
    routing = request.routing
    if routing.policy not in POLICIES:
        raise InvalidArgument(
            f"routing.policy {routing.policy} is not a RoutingPolicy value "
            f"(known: {', '.join(map(str, sorted(POLICIES)))})",
            "routing.policy",
        )
    return ParseInput(
        text=request.text,
        request_id=request.request_id,
        top_k=request.top_k,
        policy=POLICIES[routing.policy],
        threshold=routing.confidence_threshold
        if routing.HasField("confidence_threshold")
        else None,
    )


def to_response(
    result: ParseResult, model_version: str, total_ms: float, with_text: bool, names: list[str]
) -> nlu_pb2.ParseResponse:
    """The answer as nlu.v1 carries it; `names`: the intents in bundle order as answers name
    them (a trained out-of-scope class as the out-of-scope intent)."""
    enc, routed = result.encoded, result.routed
    frame = enc.frame
    return nlu_pb2.ParseResponse(
        intent=routed.intent,
        intent_confidence=routed.confidence,
        top_intents=[
            nlu_pb2.IntentScore(label=names[i], probability=float(frame.probabilities[i]))
            for i in np.argsort(-frame.probabilities)[: result.top_k]
        ],
        slots=[
            nlu_pb2.Slot(
                name=s.name, value=s.value, start=s.start, end=s.end, confidence=s.confidence
            )
            for s in routed.slots
        ],
        source=SOURCES[result.source],
        fallback_reason=routed.fallback_reason,
        timings=nlu_pb2.StageTimings(
            queue_ms=enc.queue_ms,
            tokenize_ms=enc.tokenize_ms,
            inference_ms=enc.inference_ms,
            decode_ms=enc.decode_ms,
            generator_ms=routed.generator_ms,
            total_ms=total_ms,
        ),
        model_version=model_version,
        request_id=result.request_id,
        truncated_words=frame.truncated_words,
        encoder_intent=frame.encoder_answer.label,
        encoder_confidence=frame.encoder_answer.probability,
        generated_text=routed.generated_text if with_text else "",
        out_of_scope=routed.out_of_scope,
        from_extension=routed.extension,
        in_scope_score=frame.in_scope_score,
    )


async def parse(
    core: NluCore, requests: list[nlu_pb2.ParseRequest], timeout_s: float | None
) -> list[nlu_pb2.ParseResponse]:
    """Every request answered (order kept) by the core, within `timeout_s` when given."""
    started = time.perf_counter()
    results = await core.parse([to_input(r) for r in requests], timeout_s)
    total_ms = (time.perf_counter() - started) * 1000
    with_text = core.options.return_generated_text
    version = core.engine.bundle.model_version
    names = core.engine.open_world.answer_names
    return [to_response(r, version, total_ms, with_text, names) for r in results]


async def parse_batch(
    core: NluCore, request: nlu_pb2.ParseBatchRequest, timeout_s: float | None
) -> nlu_pb2.ParseBatchResponse:
    check_batch_size(len(request.requests), core.options.limits)
    return nlu_pb2.ParseBatchResponse(
        responses=await parse(core, list(request.requests), timeout_s)
    )


def model_info(core: NluCore) -> nlu_pb2.ModelInfo:
    info = asdict(describe(core))
    oos = {k: v for k, v in info["out_of_scope"].items() if v is not None}
    return nlu_pb2.ModelInfo(
        **{k: v for k, v in info.items() if v is not None}
        | {
            "routing": nlu_pb2.RoutingInfo(**info["routing"]),
            "out_of_scope": nlu_pb2.OutOfScopeInfo(**oos),
            "extension_intents": [
                nlu_pb2.ExtensionIntentInfo(**e) for e in info["extension_intents"]
            ],
        }
    )
