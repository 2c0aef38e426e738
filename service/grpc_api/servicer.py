"""The gRPC servicer: protobuf ⇄ core types."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict

import grpc

from service import metrics
from service.contract.types import ParseInput, ParseResult, Policy, Source
from service.errors import InvalidArgument, Undecodable, as_service_error
from service.gen.nlu.v1 import nlu_pb2, nlu_pb2_grpc
from service.grpc_api.status import GRPC_CODES
from service.lifecycle import Lifecycle
from service.model_info import describe
from service.settings import Settings
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
    result: ParseResult, model_version: str, total_ms: float, with_text: bool
) -> nlu_pb2.ParseResponse:
    enc, routed = result.encoded, result.routed
    frame = enc.frame
    return nlu_pb2.ParseResponse(
        intent=routed.intent,
        intent_confidence=routed.confidence,
        top_intents=[
            nlu_pb2.IntentScore(label=s.label, probability=s.probability)
            for s in frame.top_intents[: result.top_k]
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


class NluServicer(nlu_pb2_grpc.NluServiceServicer):
    """Protobuf in, protobuf out. Errors, metrics and access logs come from the interceptor
    chain (`service.grpc_api.interceptors`), so no handler catches anything."""

    def __init__(self, lifecycle: Lifecycle, settings: Settings) -> None:
        self.lifecycle = lifecycle
        self.settings = settings

    async def _parse(
        self, requests: list[nlu_pb2.ParseRequest], context: grpc.aio.ServicerContext
    ) -> list[nlu_pb2.ParseResponse]:
        core = self.lifecycle.loaded()
        started = time.perf_counter()
        results = await core.parse([to_input(r) for r in requests], context.time_remaining())
        total_ms = (time.perf_counter() - started) * 1000
        with_text = self.settings.observability.return_generated_text
        version = core.engine.bundle.model_version
        return [to_response(r, version, total_ms, with_text) for r in results]

    async def Parse(self, request, context):
        (response,) = await self._parse([request], context)
        return response

    async def ParseBatch(self, request, context):
        check_batch_size(len(request.requests), self.settings.server)
        return nlu_pb2.ParseBatchResponse(
            responses=await self._parse(list(request.requests), context)
        )

    async def GetModelInfo(self, request, context):
        info = asdict(describe(self.lifecycle.loaded()))
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

    async def _stream_item(
        self, request: nlu_pb2.ParseRequest | Undecodable, context: grpc.aio.ServicerContext
    ) -> nlu_pb2.ParseResponse:
        """One request of a stream: its answer, or an answer carrying its error, so one bad
        request does not end a stream that others share (the one handler that catches: a stream
        item's failure is that item's answer, mapped as ErrorMapping maps a call's)."""
        try:
            if isinstance(request, Undecodable):
                raise request.refuse()
            (response,) = await self._parse([request], context)
            return response
        except Exception as exc:
            error = as_service_error(exc)
            metrics.FAILURES.labels(error.reason).inc()
            return nlu_pb2.ParseResponse(
                request_id=getattr(request, "request_id", ""),
                error=nlu_pb2.ItemError(
                    code=GRPC_CODES[error.kind].name,
                    message=str(error),
                    field=error.field,
                    retry_after_s=error.retry_after_s or 0.0,
                ),
            )

    async def ParseStream(
        self,
        request_iterator: AsyncIterator[nlu_pb2.ParseRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[nlu_pb2.ParseResponse]:
        """Requests are parsed concurrently (they batch together); answers keep request order,
        one per request, a refused one carrying its `error`. At most `max_stream_in_flight`
        requests are parsed or waiting to be written: the stream is not read further until one
        is answered, so a fast writer cannot fill the shared queue."""
        pending: asyncio.Queue[asyncio.Future | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.settings.server.max_stream_in_flight)

        async def read() -> None:
            requests = aiter(request_iterator)
            while await slots.acquire() and (request := await anext(requests, None)) is not None:
                pending.put_nowait(asyncio.ensure_future(self._stream_item(request, context)))
            pending.put_nowait(None)

        def reader_failed(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                pending.put_nowait(task)  # the main loop raises its exception

        reader = asyncio.ensure_future(read())
        reader.add_done_callback(reader_failed)
        try:
            while (task := await pending.get()) is not None:
                yield await task
                slots.release()
            await reader
        finally:
            reader.cancel()
            while not pending.empty():
                task = pending.get_nowait()
                if task is not None:
                    task.cancel()
