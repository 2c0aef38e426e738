"""The gRPC servicer: nlu.v1 over `service.api`, plus the stream's per-item answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from service import api, metrics
from service.errors import Undecodable, as_service_error
from service.gen.nlu.v1 import nlu_pb2, nlu_pb2_grpc
from service.grpc_api.status import GRPC_CODES
from service.lifecycle import Lifecycle


class NluServicer(nlu_pb2_grpc.NluServiceServicer):
    """Protobuf in, protobuf out. Errors, metrics and access logs come from the interceptor
    chain (`service.grpc_api.interceptors`), so no handler catches anything."""

    def __init__(self, lifecycle: Lifecycle, max_stream_in_flight: int) -> None:
        self.lifecycle = lifecycle
        self.max_stream_in_flight = max_stream_in_flight

    async def Parse(self, request, context):
        (response,) = await api.parse(self.lifecycle.loaded(), [request], context.time_remaining())
        return response

    async def ParseBatch(self, request, context):
        return await api.parse_batch(self.lifecycle.loaded(), request, context.time_remaining())

    async def GetModelInfo(self, request, context):
        return api.model_info(self.lifecycle.loaded())

    async def _stream_item(
        self, request: nlu_pb2.ParseRequest | Undecodable, context: grpc.aio.ServicerContext
    ) -> nlu_pb2.ParseResponse:
        """One request of a stream: its answer, or an answer carrying its error, so one bad
        request does not end a stream that others share (the one handler that catches: a stream
        item's failure is that item's answer, mapped as ErrorMapping maps a call's)."""
        try:
            if isinstance(request, Undecodable):
                raise request.refuse()
            core = self.lifecycle.loaded()
            (response,) = await api.parse(core, [request], context.time_remaining())
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
        slots = asyncio.Semaphore(self.max_stream_in_flight)

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
