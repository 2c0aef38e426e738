"""Suite `reliability`: what clients see when things go wrong, against a real server.

    python -m benchmarks reliability --bundle bundles/atis [--seconds 10]
    python -m benchmarks reliability --bundle bundles/atis --soak     (10 minutes, not in CI)

Scenarios, each on its own server: `overload` (about 3x capacity, as the overload suite with the
default admission settings); the generator `down`, `slow` (past its timeout), answering HTTP 500,
answering garbage — every request routed to it, then the generator healed to show the breaker's
half-open probe closing the circuit; `shutdown` (SIGTERM under a closed-loop load); `crash_restart`
(SIGKILL under load, a new server on the same port, callers using wait_for_ready); `rollout`
(three servers behind one target restarted in turn, with the shipped client config and with
gRPC's defaults: the first must see no error at all). Per scenario:
requests sent, answered, shed, refused, failed and lost (benchmarks.load.calls), p50/p99 of the
answered and the shed ones, peak server RSS. `--soak` runs half of capacity for `--soak-seconds`
and records RSS growth and errors; it is merged into the same reliability.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import signal
import time
from pathlib import Path

import grpc
from matplotlib.figure import Figure

from benchmarks.chat_stub import Script, chat_server
from benchmarks.load.calls import OUTCOMES, Call, tally, timed
from benchmarks.load.meta import run_meta
from benchmarks.overload import add_load_arguments, capacity, fire_process, measure, rss_mb
from benchmarks.suite import BundleSuite, save_figure, write_json
from export.data import read_dataset
from export.fetch import resolve_dataset
from service.client import CHANNEL_OPTIONS, NluClient, request
from service.contract.paths import PROJECT_ROOT
from service.gen.nlu.v1 import nlu_pb2, nlu_pb2_grpc
from service.process import ServerProcess, free_port
from service.settings import ServerSettings

CONCURRENCY = 8  # closed-loop callers in the fault, shutdown and crash scenarios
GOOD_ANSWER = '{"intent": "%s", "slots": []}'
FAULTS = ("down", "slow", "http_500", "garbage")
BREAKER_RESET_S = 2.0
ROUTE_ALL = [
    "--confidence-threshold", "1.0", "--generator-timeout-s", "0.5",
    "--breaker-reset-s", str(BREAKER_RESET_S), "--generator-backend", "openai",
]  # fmt: skip
# Callers reconnect quickly after a restart instead of gRPC's default 1 s+ backoff.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


class Load:
    """`concurrency` callers sending back-to-back until `stop()`; every call is recorded. With
    `until_refused`, a caller stops at its first shed or refused call (as a client behind a load
    balancer moves to another replica); otherwise it waits `backoff_s` after one, as a client
    honouring UNAVAILABLE and RetryInfo does."""

    def __init__(
        self, target: str, texts: list[str], concurrency: int, *, policy: str = "default",
        timeout_s: float = 10.0, wait_for_ready: bool = False, until_refused: bool = False,
        backoff_s: float = 0.1, options: list[tuple[str, object]] = FAST_RECONNECT,
    ) -> None:  # fmt: skip
        self.target, self.texts, self.concurrency = target, itertools.cycle(texts), concurrency
        self.policy, self.timeout_s, self.wait_for_ready = policy, timeout_s, wait_for_ready
        self.until_refused, self.backoff_s, self.options = until_refused, backoff_s, options
        self.calls: list[Call] = []
        self._stopped = False

    async def __aenter__(self) -> Load:
        self._channel = grpc.aio.insecure_channel(self.target, options=self.options)
        stub = nlu_pb2_grpc.NluServiceStub(self._channel)
        self._tasks = [asyncio.ensure_future(self._caller(stub)) for _ in range(self.concurrency)]
        return self

    async def _caller(self, stub: nlu_pb2_grpc.NluServiceStub) -> None:
        while not self._stopped:
            rpc = stub.Parse(
                request(next(self.texts), policy=self.policy),
                timeout=self.timeout_s,
                wait_for_ready=self.wait_for_ready,
            )
            call = await timed(rpc)
            self.calls.append(call)
            if call.outcome in ("shed", "refused"):
                if self.until_refused:
                    return
                await asyncio.sleep(self.backoff_s)

    def stop(self) -> None:
        self._stopped = True

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        await asyncio.gather(*self._tasks)
        await self._channel.close()


def launch(bundle: Path, name: str, *flags: str, port: int | None = None) -> ServerProcess:
    server = ServerProcess.launch(
        bundle, PROJECT_ROOT / "logs" / f"reliability-{name}.log", *flags, port=port
    )
    server.wait_serving()
    return server


def overload_scenario(bundle: Path, texts: list[str], args: argparse.Namespace) -> dict:
    row = measure(bundle, texts, 0.0, args)
    return {"scenario": "overload", **row}


def fault_script(fault: str) -> Script | None:
    """The scripted generator for one fault; None: nothing listens on its port."""
    return {
        "down": None,
        "slow": Script(delay_s=3.0),  # past the 0.5 s generator timeout of ROUTE_ALL
        "http_500": Script(status=[500] * 1_000_000),
        "garbage": Script(raw_body="<html>502 bad gateway</html>"),
    }[fault]


async def generator_fault(
    bundle: Path, texts: list[str], fault: str, args: argparse.Namespace
) -> dict:
    """Every request routed to a failing generator: the encoder must answer them all in time."""
    script, port = fault_script(fault), free_port()
    with chat_server(script, port) if script else contextlib.nullcontext():
        server = launch(
            bundle, fault, *ROUTE_ALL, "--generator-base-url", f"http://127.0.0.1:{port}"
        )
        try:
            pid = server.process.pid
            rss = [rss_mb(pid)]
            async with Load(server.target, texts, CONCURRENCY, timeout_s=2.0) as load:
                await asyncio.sleep(args.seconds)
                rss.append(rss_mb(pid))
            opened = server.metric('nlu_generator_failure_total{reason="breaker_open"}') > 0
            healed = await asyncio.to_thread(generator_answers_once_healed, server, script, port)
        finally:
            exit_code = server.stop()
    return {
        "scenario": f"generator_{fault}",
        **tally(load.calls),
        "rss_max_mb": round(max(rss), 1),
        "breaker_opened": opened,
        "generator_answers_after_heal": healed,
        "exit_code": exit_code,
    }


def generator_answers_once_healed(server: ServerProcess, script: Script | None, port: int) -> int:
    """Heal the generator, wait out the open circuit: of 5 calls, how many it answered (the
    first is the half-open probe that closes the circuit)."""
    client = NluClient(server.target, timeout_s=5)
    text = "show me flights from boston to denver"
    answer = GOOD_ANSWER % client.parse(text).intent  # the encoder's, inside the schema
    healthy = Script(content=answer)
    if script is not None:  # the same server, behaving again
        script.delay_s, script.status, script.raw_body, script.content = 0.0, [], None, answer
    with chat_server(healthy, port) if script is None else contextlib.nullcontext():
        time.sleep(BREAKER_RESET_S + 0.1)
        sources = [client.parse(text).source for _ in range(5)]
    client.close()
    return sum(s == nlu_pb2.SOURCE_GENERATOR for s in sources)


async def shutdown_under_load(bundle: Path, texts: list[str], args: argparse.Namespace) -> dict:
    """SIGTERM while callers send back-to-back: every accepted call must be answered. The
    server begins stopping (GOAWAY) once its drain notice is over; the calls grpc turns away
    then are refusals (benchmarks.load.calls), as long as it exits within its drain grace (no call
    it had begun was cut short)."""
    server = launch(bundle, "shutdown")
    drain = ServerSettings()
    async with Load(server.target, texts, CONCURRENCY, until_refused=True) as load:
        await asyncio.sleep(args.seconds)
        signalled = time.monotonic()
        rss = rss_mb(server.process.pid)
        server.process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(server.process.wait, 60)
        exited = time.monotonic()
    return {
        "scenario": "shutdown",
        **tally(load.calls, stopping_since=signalled + drain.drain_notice_s),
        "rss_max_mb": round(rss, 1),
        "answered_after_sigterm": sum(
            c.outcome == "answered" and c.ended > signalled for c in load.calls
        ),
        "sigterm_to_exit_s": round(exited - signalled, 2),
        "drain_grace_s": drain.drain_grace_s,
        "exit_code": exit_code,
    }


async def crash_restart(bundle: Path, texts: list[str], args: argparse.Namespace) -> dict:
    """SIGKILL under load, then a new server on the same port. Only the calls in flight at the
    kill may fail (counted as failed); callers use wait_for_ready, so calls made while no server
    listens wait for the restart instead of failing."""
    server = launch(bundle, "crash")
    async with Load(server.target, texts, CONCURRENCY, wait_for_ready=True, timeout_s=60) as load:
        await asyncio.sleep(args.seconds)
        rss = rss_mb(server.process.pid)
        killed = time.monotonic()
        server.process.kill()
        await asyncio.to_thread(server.process.wait, 30)
        dead = time.monotonic()  # calls sent before this may have reached the dying server
        again = await asyncio.to_thread(launch, bundle, "restarted", port=server.port)
        serving = time.monotonic()
        await asyncio.sleep(args.seconds)
    exit_code = again.stop()
    counts = tally(load.calls)
    at_kill = [c for c in load.calls if c.started <= dead and c.outcome in ("failed", "lost")]
    after = [c for c in load.calls if c.started >= serving]
    unanswered = counts["failed"] + counts["lost"]
    return {
        "scenario": "crash_restart",
        **counts,
        "failed": len(at_kill),  # in flight at the kill: the only calls allowed to fail
        "lost": unanswered - len(at_kill),
        "rss_max_mb": round(rss, 1),
        "kill_to_serving_s": round(serving - killed, 2),
        "after_restart_sent": len(after),
        "after_restart_answered": sum(c.outcome == "answered" for c in after),
        "exit_code": exit_code,
    }


async def rollout(bundle: Path, texts: list[str], args: argparse.Namespace) -> list[dict]:
    """A rolling restart under a steady load: three servers behind one target (a static
    `ipv4:` list, as a headless Service's DNS name resolves to every pod), each SIGTERMed in
    turn, restarted on its port once it has exited, and serving before the next one goes. Two
    caller populations share the run: one with the shipped client config (round_robin, health
    checking, retry on UNAVAILABLE: service.client.CHANNEL_OPTIONS), which must see no error,
    and one with gRPC's defaults (pick_first, no retry), to show what the config buys."""
    servers = [await asyncio.to_thread(launch, bundle, f"rollout-{i}") for i in range(3)]
    target = "ipv4:" + ",".join(s.target for s in servers)
    populations = {"shipped_client_config": CHANNEL_OPTIONS, "grpc_defaults": []}
    loads = {
        name: Load(target, texts, CONCURRENCY // 2, timeout_s=10.0, options=options)
        for name, options in populations.items()
    }
    restarts, rss = [], []
    try:
        async with contextlib.AsyncExitStack() as stack:
            for load in loads.values():
                await stack.enter_async_context(load)
            await asyncio.sleep(args.seconds)
            for i, server in enumerate(servers):
                rss.append(rss_mb(server.process.pid))
                signalled = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                exit_code = await asyncio.to_thread(server.process.wait, 60)
                exited = time.monotonic()
                servers[i] = await asyncio.to_thread(
                    launch, bundle, f"rollout-{i}-again", port=server.port
                )
                restarts.append(
                    {
                        "exit_code": exit_code,
                        "sigterm_to_exit_s": round(exited - signalled, 2),
                        "exit_to_serving_s": round(time.monotonic() - exited, 2),
                    }
                )
                await asyncio.sleep(args.seconds)
    finally:
        for server in servers:
            server.stop()
    return [
        {
            "scenario": f"rollout_{name}",
            "servers": len(servers),
            "callers": load.concurrency,
            **tally(load.calls),
            "rss_max_mb": round(max(rss), 1),
            "restarts": restarts,
        }
        for name, load in loads.items()
    ]


def soak(bundle: Path, texts: list[str], args: argparse.Namespace) -> dict:
    """Half of capacity for `--soak-seconds`: RSS growth after a warm-up, and errors."""
    server = launch(bundle, "soak")
    try:
        capacity_rps, _ = capacity(server.target, texts, 10.0)
        rate = capacity_rps / 2
        fire_process((server.target, texts, rate, 30.0))  # warm-up: caches, allocator pools
        pid, rss = server.process.pid, []
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            job = pool.apply_async(fire_process, [(server.target, texts, rate, args.soak_seconds)])
            while not job.ready():
                rss.append(rss_mb(pid))
                time.sleep(5.0)
            calls = job.get()
        rss.append(rss_mb(pid))
    finally:
        exit_code = server.stop()
    counts = tally(calls)
    return {
        "seconds": args.soak_seconds,
        "capacity_rps": capacity_rps,
        "offered_rps": round(rate, 1),
        **counts,
        "errors": counts["sent"] - counts["answered"],
        "rss_start_mb": round(rss[0], 1),
        "rss_max_mb": round(max(rss), 1),
        "rss_end_mb": round(rss[-1], 1),
        "rss_growth_pct": round(100 * (rss[-1] - rss[0]) / rss[0], 2),
        "exit_code": exit_code,
        "meta": run_meta(),
    }


class ReliabilitySuite(BundleSuite):
    name = "reliability"
    help = "overload, generator faults, shutdown and crash under load: sent/answered/shed/lost"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_load_arguments(parser)
        parser.add_argument("--soak", action="store_true", help="only the soak run (not in CI)")
        parser.add_argument("--soak-seconds", type=float, default=600.0)

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        if args.quick:
            args.seconds, args.soak_seconds = 1.0, 10.0
        texts = [ex.text for ex in read_dataset(resolve_dataset(args.data)).splits["test"]]
        bundle = self.bundle(args)
        (PROJECT_ROOT / "logs").mkdir(exist_ok=True)  # server logs (not committed)
        result = self.load_result(out_dir) or {}
        if args.soak:
            result["soak"] = soak(bundle, texts, args)
        else:
            result["scenarios"] = asyncio.run(self.scenarios(bundle, texts, args))
            result.update(bundle=str(bundle), seconds_per_phase=args.seconds, meta=run_meta())
        write_json(out_dir / "reliability.json", result)
        if "scenarios" in result:
            self.plot(result["scenarios"], out_dir / "reliability.png")
        return result

    async def scenarios(self, bundle: Path, texts: list[str], args: argparse.Namespace) -> list:
        rows = [await asyncio.to_thread(overload_scenario, bundle, texts, args)]
        for fault in FAULTS:
            rows.append(await generator_fault(bundle, texts, fault, args))
        rows.append(await shutdown_under_load(bundle, texts, args))
        rows.append(await crash_restart(bundle, texts, args))
        rows += await rollout(bundle, texts, args)
        return rows

    def plot(self, rows: list[dict], path: Path) -> None:
        fig = Figure(figsize=(9, 4.5))
        ax = fig.subplots()
        names = [r["scenario"] for r in rows]
        left = [0.0] * len(rows)
        for outcome in OUTCOMES:
            share = [100 * r[outcome] / max(1, r["sent"]) for r in rows]
            ax.barh(names, share, left=left, label=outcome)
            left = [a + b for a, b in zip(left, share, strict=True)]
        for i, r in enumerate(rows):
            ax.text(101, i, f"{r['sent']} sent", va="center", fontsize=8)
        ax.set_xlim(0, 118)
        ax.invert_yaxis()
        ax.set_xlabel("% of requests sent")
        ax.set_title("What clients saw, per scenario")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(OUTCOMES), fontsize=8)
        save_figure(fig, path)

    def summary(self, result: dict) -> str:
        lines = []
        if "scenarios" in result:
            lines += [
                "| scenario | sent | answered | shed | refused | failed | lost | answered p50/p99 "
                "ms | shed p99 ms | peak RSS MB | notes |",
                "|---" * 11 + "|",
            ]
            lines += [self.row(r) for r in result["scenarios"]]
        if "soak" in result:
            s = result["soak"]
            lines.append(
                f"\nSoak: {s['seconds']:g} s at {s['offered_rps']} rps (half of {s['capacity_rps']}"
                f" rps): {s['sent']} sent, {s['errors']} not answered ({s['shed']} shed "
                f"{s.get('shed_reasons', '')}, {s['failed']} failed, {s['lost']} lost), RSS "
                f"{s['rss_start_mb']} → "
                f"{s['rss_end_mb']} MB (max {s['rss_max_mb']}, growth {s['rss_growth_pct']} %)."
            )
        return "\n".join(lines)

    @staticmethod
    def row(r: dict) -> str:
        notes = {
            "overload": lambda: (
                f"{r.get('offered_rps')} rps offered, capacity {r.get('capacity_rps')}, "
                f"answered p99 {r.get('admitted_p99_over_saturation')}x the saturation p99 "
                f"({r.get('saturation_p99_ms')} ms), recovered {r.get('recovered_rps')} rps"
            ),
            "shutdown": lambda: (
                f"exit {r.get('exit_code')} {r.get('sigterm_to_exit_s')} s after SIGTERM; "
                f"{r.get('turned_away_at_stop')} of the refused turned away by grpc as it stopped"
            ),
            "rollout": lambda: (
                f"{r.get('servers')} servers restarted in turn under {r.get('callers')} callers: "
                f"exit {'/'.join(str(x['exit_code']) for x in r.get('restarts', []))}, "
                "SIGTERM to exit "
                f"{'/'.join(str(x['sigterm_to_exit_s']) for x in r.get('restarts', []))} s"
            ),
            "crash_restart": lambda: (
                f"SERVING {r.get('kill_to_serving_s')} s after the kill; "
                f"after it {r.get('after_restart_answered')}/{r.get('after_restart_sent')} answered"
            ),
        }.get(
            "rollout" if r["scenario"].startswith("rollout_") else r["scenario"],
            lambda: (
                f"breaker opened: {r.get('breaker_opened')}, generator answers after "
                f"healing {r.get('generator_answers_after_heal')}/5"
            ),
        )()
        return (
            f"| {r['scenario']} | {r['sent']} | {r['answered']} | {r['shed']} | {r['refused']} | "
            f"{r['failed']} | {r['lost']} | {r['answered_p50_ms']}/{r['answered_p99_ms']} | "
            f"{r['shed_p99_ms']} | {r['rss_max_mb']} | {notes} |"
        )


SUITE = ReliabilitySuite()
