"""The gRPC servicer: protobuf ⇄ core types, and every exception mapped in one place."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from service import metrics
from service.core import NluCore, ParseInput, ParseResult, Policy, Source
from service.errors import grpc_status
from service.gen.nlu.v1 import nlu_pb2, nlu_pb2_grpc

log = logging.getLogger(__name__)

POLICIES = {
    nlu_pb2.ROUTING_POLICY_DEFAULT: Policy.DEFAULT,
    nlu_pb2.ROUTING_POLICY_ENCODER_ONLY: Policy.ENCODER_ONLY,
    nlu_pb2.ROUTING_POLICY_GENERATOR_ONLY: Policy.GENERATOR_ONLY,
}
SOURCES = {Source.ENCODER: nlu_pb2.SOURCE_ENCODER, Source.GENERATOR: nlu_pb2.SOURCE_GENERATOR}


def to_input(request: nlu_pb2.ParseRequest) -> ParseInput:
    routing = request.routing
    return ParseInput(
        text=request.text,
        request_id=request.request_id,
        top_k=request.top_k,
        policy=POLICIES.get(routing.policy, Policy.DEFAULT),
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
        encoder_intent=frame.intent,
        encoder_confidence=frame.confidence,
        generated_text=routed.generated_text if with_text else "",
    )


class Observation:
    """Status code and duration of one RPC; `fail` is the single error-mapping point."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK

    async def fail(self, exc: Exception, context: grpc.aio.ServicerContext) -> None:
        self.code, message, reason = grpc_status(exc)
        metrics.FAILURES.labels(reason).inc()
        await context.abort(self.code, message)

    def finish(self) -> None:
        metrics.REQUESTS.labels(self.method, self.code.name).inc()
        metrics.REQUEST_DURATION.labels(self.method).observe(time.perf_counter() - self.started)


def observed(method: str) -> Callable:
    """Count, time and map the errors of a unary RPC."""

    def wrap(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(handler)
        async def run(self: NluServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            observation = Observation(method)
            try:
                return await handler(self, request, context)
            except asyncio.CancelledError:
                observation.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                await observation.fail(exc, context)
            finally:
                observation.finish()

        return run

    return wrap


class NluServicer(nlu_pb2_grpc.NluServiceServicer):
    def __init__(self, core: NluCore) -> None:
        self.core = core

    async def _parse(
        self, requests: list[nlu_pb2.ParseRequest], context: grpc.aio.ServicerContext
    ) -> list[nlu_pb2.ParseResponse]:
        started = time.perf_counter()
        results = await self.core.parse([to_input(r) for r in requests], context.time_remaining())
        total_ms = (time.perf_counter() - started) * 1000
        with_text = self.core.settings.return_generated_text
        return [to_response(r, self.core.model_version, total_ms, with_text) for r in results]

    @observed("Parse")
    async def Parse(self, request, context):
        (response,) = await self._parse([request], context)
        return response

    @observed("ParseBatch")
    async def ParseBatch(self, request, context):
        self.core.check_batch(len(request.requests))
        return nlu_pb2.ParseBatchResponse(
            responses=await self._parse(list(request.requests), context)
        )

    @observed("GetModelInfo")
    async def GetModelInfo(self, request, context):
        info = self.core.model_info()
        routing = nlu_pb2.RoutingInfo(
            generator_enabled=info["generator_backend"] != "none",
            generator_backend=info.pop("generator_backend"),
            generator_model=info.pop("generator_model"),
            confidence_threshold=info.pop("confidence_threshold"),
            generator_mode=info.pop("generator_mode"),
            generator_prompt=info.pop("generator_prompt"),
        )
        return nlu_pb2.ModelInfo(**info, routing=routing)

    async def ParseStream(
        self,
        request_iterator: AsyncIterator[nlu_pb2.ParseRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[nlu_pb2.ParseResponse]:
        """Requests are parsed concurrently (they batch together); answers keep request order."""
        observation = Observation("ParseStream")
        pending: asyncio.Queue[asyncio.Task | None] = asyncio.Queue()

        async def read() -> None:
            async for request in request_iterator:
                await pending.put(asyncio.ensure_future(self._parse([request], context)))
            await pending.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await pending.get()) is not None:
                (response,) = await task
                yield response
            await reader
        except asyncio.CancelledError:
            observation.code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            await observation.fail(exc, context)
        finally:
            reader.cancel()
            while not pending.empty():
                task = pending.get_nowait()
                if task is not None:
                    task.cancel()
            observation.finish()
