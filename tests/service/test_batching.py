"""Batching logic with a recording pipeline (the real engine is exercised by the e2e tests)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import BatchQueue
from service.contract.types import Frame
from service.errors import DeadlineExceeded, Overloaded, Unavailable
from service.settings import BatchingSettings


class RecordingPipeline:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def encode(self, texts):
        self.gate.wait(5)
        self.batches.append(list(texts))
        return texts

    def infer(self, enc):
        return enc

    def decode(self, texts, enc, raw):
        return [Frame(t, "intent", 1.0, [], np.ones(1), [], [], 1.0, np.zeros(1), 0) for t in texts]


def run(coro):
    return asyncio.run(coro)


def batching(
    max_batch_size: int, max_queue_delay_s: float, max_queue_size: int
) -> BatchingSettings:
    return BatchingSettings(
        max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_s * 1000,
        max_queue_size=max_queue_size,
    )


def test_batch_closes_at_max_batch_size():
    async def scenario():
        pipeline = RecordingPipeline()
        queue = BatchQueue(pipeline=pipeline, batching=batching(4, 60.0, 100))
        queue.start()
        started = time.perf_counter()
        results = await asyncio.gather(*queue.submit(list("abcd"), None))
        elapsed = time.perf_counter() - started
        await queue.stop()
        return pipeline.batches, results, elapsed

    batches, results, elapsed = run(scenario())
    assert batches == [list("abcd")]
    assert [r.frame.text for r in results] == list("abcd")
    assert elapsed < 30.0  # did not wait for the 60 s delay, however slow the machine


def test_batch_closes_after_max_queue_delay():
    async def scenario():
        pipeline = RecordingPipeline()
        queue = BatchQueue(pipeline=pipeline, batching=batching(100, 1.0, 100))
        queue.start()
        first = queue.submit(["a"], None)
        await asyncio.sleep(0.05)
        second = queue.submit(["b"], None)
        started = time.perf_counter()
        results = await asyncio.gather(*first, *second)
        await queue.stop()
        return pipeline.batches, results, time.perf_counter() - started

    batches, results, waited = run(scenario())
    assert batches == [["a", "b"]]  # the second arrived within the delay and joined
    assert results[0].queue_ms >= 900  # the first waited out the 1 s delay
    assert waited >= 0.5


def test_full_queue_is_refused_at_once_and_all_or_nothing():
    async def scenario():
        pipeline = RecordingPipeline()
        pipeline.gate.clear()  # the worker blocks on the first batch
        queue = BatchQueue(pipeline=pipeline, batching=batching(1, 0.0, 3))
        queue.start()
        first = queue.submit(["busy"], None)
        await asyncio.sleep(0.05)  # the worker took it and is blocked
        queued = queue.submit(["a", "b"], None)
        with pytest.raises(Overloaded, match="queue full"):
            queue.submit(["c", "d"], None)  # 2 + 2 > 3: none of them is queued
        queued += queue.submit(["c"], None)
        pipeline.gate.set()
        results = await asyncio.gather(*first, *queued)
        await queue.stop()
        return [r.frame.text for r in results]

    assert run(scenario()) == ["busy", "a", "b", "c"]


def test_expired_requests_are_dropped_before_inference():
    async def scenario():
        pipeline = RecordingPipeline()
        pipeline.gate.clear()
        queue = BatchQueue(pipeline=pipeline, batching=batching(8, 0.0, 10))
        queue.start()
        blocker = queue.submit(["busy"], None)
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        expired = queue.submit(["late"], loop.time() + 0.01)
        alive = queue.submit(["fine"], loop.time() + 30)
        await asyncio.sleep(0.05)
        pipeline.gate.set()
        await asyncio.gather(*blocker, *alive)
        with pytest.raises(DeadlineExceeded, match="dropped before inference"):
            await expired[0]
        await queue.stop()
        return pipeline.batches

    assert run(scenario()) == [["busy"], ["fine"]]


def test_stop_fails_what_is_still_queued():
    async def scenario():
        pipeline = RecordingPipeline()
        pipeline.gate.clear()
        queue = BatchQueue(pipeline=pipeline, batching=batching(1, 0.0, 10))
        queue.start()
        queue.submit(["busy"], None)
        await asyncio.sleep(0.05)
        waiting = queue.submit(["queued"], None)
        threading.Timer(0.1, pipeline.gate.set).start()
        await queue.stop()
        with pytest.raises(Unavailable):
            await waiting[0]
        with pytest.raises(Unavailable):
            queue.submit(["after"], None)

    run(scenario())


def test_a_queue_holding_more_work_than_max_queue_wait_sheds_at_once():
    async def scenario():
        pipeline = RecordingPipeline()
        settings = BatchingSettings(max_batch_size=1, max_queue_size=100, max_queue_wait_ms=50)
        queue = BatchQueue(pipeline=pipeline, batching=settings)
        queue.start()
        await asyncio.gather(*queue.submit(["warm"], None))
        queue.last_batch_s = 0.02  # as measured on the last batch: 20 ms per utterance
        pipeline.gate.clear()  # the worker blocks on the next batch
        running = queue.submit(["busy"], None)
        await asyncio.sleep(0.05)
        queued = queue.submit(["a", "b"], None)  # 40 ms of work waiting: still admitted
        queued += queue.submit(["c"], None)  # 60 ms once admitted
        with pytest.raises(Overloaded, match="about 60 ms of work queued") as refused:
            queue.submit(["d"], None)
        pipeline.gate.set()
        await asyncio.gather(*running, *queued)
        await queue.stop()
        return refused.value

    refused = run(scenario())
    assert refused.retry_after_s == pytest.approx(0.06)
