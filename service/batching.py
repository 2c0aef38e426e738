"""Dynamic micro-batching: one bounded queue of utterances feeding one inference worker.

Every RPC kind (Parse, ParseBatch, ParseStream) submits utterances here. A batch closes when it
holds `max_batch_size` utterances or `max_queue_delay` after its first one arrived; utterances
whose deadline has passed are dropped before inference; a full queue refuses at once. Inference
runs in a worker thread so the event loop keeps accepting requests while a batch computes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from service import metrics, tracing
from service.contract.text import EncodedBatch
from service.contract.types import Encoded, Frame, RawOutputs
from service.errors import DeadlineExceeded, Overloaded, Unavailable
from service.settings import BatchingSettings

log = logging.getLogger(__name__)
MIN_RETRY_S = 0.01


class Pipeline(Protocol):
    """The three batch stages of the encoder runtime (service.runtime.Engine)."""

    def encode(self, texts: Sequence[str]) -> EncodedBatch: ...
    def infer(self, enc: EncodedBatch) -> RawOutputs: ...
    def decode(self, texts: Sequence[str], enc: EncodedBatch, raw: RawOutputs) -> list[Frame]: ...


@dataclass
class _Item:
    text: str
    deadline: float | None  # loop.time() by which the answer is no longer wanted
    enqueued: float  # loop.time()
    future: asyncio.Future[Encoded]
    trace_parent: object | None = None  # the request's tracing context (None when off)
    enqueued_ns: int = 0  # wall clock, for the `queue` span


class BatchQueue:
    def __init__(self, *, pipeline: Pipeline, batching: BatchingSettings) -> None:
        self.pipeline = pipeline
        self.max_batch_size = batching.max_batch_size
        self.max_queue_delay_s = batching.max_queue_delay_ms / 1000
        self.max_queue_size = batching.max_queue_size
        self.max_queue_wait_s = batching.max_queue_wait_ms / 1000
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._worker: asyncio.Task[None] | None = None
        self.last_batch_s = 0.0  # wall time of the latest batch (tokenise, infer, decode)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Fail what is still queued, stop the worker, release the inference thread."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(Unavailable("server is shutting down"))
        self._executor.shutdown(wait=True)

    def submit(self, texts: Sequence[str], deadline: float | None) -> list[asyncio.Future[Encoded]]:
        """Queue utterances all together or not at all (RESOURCE_EXHAUSTED when no room). What
        a request asks about its answer's form (top_k) stays at the edge: nothing of one request
        reaches the batch but its text, so no answer depends on its batch-mates."""
        if self._worker is None or self._worker.done():
            raise Unavailable("inference worker is not running")
        waiting_s = self.drain_estimate_s()
        if self.max_queue_wait_s and self._queue.qsize() and waiting_s > self.max_queue_wait_s:
            raise Overloaded(
                f"about {waiting_s * 1000:.0f} ms of work queued (limit "
                f"{self.max_queue_wait_s * 1000:.0f} ms); retry with backoff",
                retry_after_s=waiting_s,
            )
        if self._queue.qsize() + len(texts) > self.max_queue_size:
            raise Overloaded(
                f"queue full ({self._queue.qsize()} of {self.max_queue_size} utterances "
                f"waiting); retry with backoff",
                retry_after_s=waiting_s,
            )
        loop = asyncio.get_running_loop()
        now, parent = loop.time(), tracing.current()
        wall_ns = time.time_ns() if parent is not None else 0
        futures = []
        for text in texts:
            item = _Item(text, deadline, now, loop.create_future(), parent, wall_ns)
            self._queue.put_nowait(item)
            futures.append(item.future)
        metrics.QUEUE_DEPTH.set(self._queue.qsize())
        return futures

    def drain_estimate_s(self) -> float:
        """About how long the queued utterances take to run, from the last batch's time."""
        batches = self._queue.qsize() / self.max_batch_size
        return max(MIN_RETRY_S, batches * self.last_batch_s)

    async def _next_batch(self) -> list[_Item]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        close_at = loop.time() + self.max_queue_delay_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = close_at - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        metrics.QUEUE_DEPTH.set(self._queue.qsize())
        return batch

    def _live(self, batch: list[_Item]) -> list[_Item]:
        """Drop cancelled RPCs and utterances whose deadline passed while queued."""
        now = asyncio.get_running_loop().time()
        live = []
        for item in batch:
            if item.future.done():
                continue
            if item.deadline is not None and now >= item.deadline:
                item.future.set_exception(
                    DeadlineExceeded("deadline passed while queued; dropped before inference")
                )
                continue
            live.append(item)
        return live

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._live(await self._next_batch())
            if not batch:
                continue
            started = loop.time()
            texts = [item.text for item in batch]
            try:
                frames, stage_ns = await loop.run_in_executor(self._executor, self._infer, texts)
            except Exception as exc:  # surfaced to every caller, mapped to INTERNAL there
                log.exception("inference failed for a batch of %d", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.last_batch_s = loop.time() - started
            stages = {stage: (end - start) / 1e6 for stage, (start, end) in stage_ns.items()}
            metrics.BATCH_SIZE.observe(len(batch))
            for stage, ms in stages.items():
                metrics.STAGE_DURATION.labels(stage).observe(ms / 1000)
            tracing.record_batch(
                [item.trace_parent for item in batch],
                [item.enqueued_ns for item in batch],
                stage_ns,
                len(batch),
            )
            for item, frame in zip(batch, frames, strict=True):
                queue_ms = (started - item.enqueued) * 1000
                metrics.STAGE_DURATION.labels("queue").observe(queue_ms / 1000)
                if not item.future.done():
                    item.future.set_result(
                        Encoded(
                            frame, queue_ms, **{f"{stage}_ms": ms for stage, ms in stages.items()}
                        )
                    )

    def _infer(self, texts: list[str]) -> tuple[list[Frame], dict[str, tuple[int, int]]]:
        """Frames, and each stage's wall-clock (start, end) in ns (perf_counter deltas from one
        wall-clock reading, so they are as precise as the metrics' timings)."""
        w0, t0 = time.time_ns(), time.perf_counter()
        enc = self.pipeline.encode(texts)
        t1 = time.perf_counter()
        raw = self.pipeline.infer(enc)
        t2 = time.perf_counter()
        frames = self.pipeline.decode(texts, enc, raw)
        t3 = time.perf_counter()

        def wall(t: float) -> int:
            return w0 + int((t - t0) * 1e9)

        return frames, {
            "tokenize": (w0, wall(t1)),
            "inference": (wall(t1), wall(t2)),
            "decode": (wall(t2), wall(t3)),
        }
