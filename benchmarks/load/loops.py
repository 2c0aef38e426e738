"""Closed and open loops over a target (`benchmarks.load.targets`), every call recorded as a
`benchmarks.load.calls.Call`, with what the loop itself cost in CPU: the load generator shares the
cores with the server it measures, so its share is part of every result.

- closed loop: `concurrency` callers, each sending the next utterance as soon as its previous
  answer arrives (latency at a given concurrency; throughput at saturation);
- open loop: a call every 1/rate s whatever the answers, from `workers` processes (overload: a
  Python generator on shared cores may not reach the rate, so offered and sent are reported).

HTTP/2 targets get up to SHARED_CONNECTIONS connections, callers spread over them round robin,
as a few client processes would open: one would pin a server of several processes sharing its
port (SO_REUSEPORT hands out connections, not calls) to one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import time
from dataclasses import dataclass

from benchmarks.load.calls import Call
from benchmarks.load.targets import Send

SHARED_CONNECTIONS = 8  # per closed loop, and per open-loop process


@dataclass(frozen=True)
class Window:
    calls: list[Call]
    wall_s: float
    cpu_s: float  # the load generator's process CPU over the window

    @property
    def answered(self) -> int:
        return sum(c.code == "OK" for c in self.calls)

    @property
    def cpu_share(self) -> float:
        """Of one core: 1.0 is a core busy the whole window."""
        return self.cpu_s / self.wall_s


async def timed_send(send: Send, text: str) -> Call:
    started = time.monotonic()
    code, details = await send(text)
    return Call(started, time.monotonic() - started, code, details)


async def closed_loop(target, texts: list[str], concurrency: int, seconds: float) -> Window:
    cycle = itertools.cycle(texts)
    calls: list[Call] = []
    connections = concurrency if target.per_caller else min(concurrency, SHARED_CONNECTIONS)
    async with contextlib.AsyncExitStack() as stack:
        sends = [await stack.enter_async_context(target.connect()) for _ in range(connections)]
        cpu0, wall0 = time.process_time(), time.monotonic()
        stop_at = wall0 + seconds

        async def caller(send: Send) -> None:
            while time.monotonic() < stop_at:
                calls.append(await timed_send(send, next(cycle)))

        await asyncio.gather(*(caller(sends[i % connections]) for i in range(concurrency)))
        return Window(calls, time.monotonic() - wall0, time.process_time() - cpu0)


async def fire(target, texts: list[str], rate: float, seconds: float) -> Window:
    cycle = itertools.cycle(texts)
    async with contextlib.AsyncExitStack() as stack:
        sends = [
            await stack.enter_async_context(target.connect()) for _ in range(SHARED_CONNECTIONS)
        ]
        cpu0, wall0 = time.process_time(), time.monotonic()
        tasks = []
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, wall0 + i / rate - time.monotonic()))
            send = sends[i % SHARED_CONNECTIONS]
            tasks.append(asyncio.ensure_future(timed_send(send, next(cycle))))
        calls = list(await asyncio.gather(*tasks))
        return Window(calls, time.monotonic() - wall0, time.process_time() - cpu0)


def fire_process(job: tuple) -> Window:
    return asyncio.run(fire(*job))


def open_loop(target, texts: list[str], rate: float, seconds: float, workers: int) -> Window:
    """`rate` calls/s in all from `workers` processes; the CPU is theirs, summed."""
    job = (target, texts, rate / workers, seconds)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        windows = pool.map(fire_process, [job] * workers)
    return Window(
        [c for w in windows for c in w.calls],
        max(w.wall_s for w in windows),
        sum(w.cpu_s for w in windows),
    )
