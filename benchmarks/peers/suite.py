"""Suite `peers`: the same bundle served by this service, Triton Inference Server and MLServer,
side by side under one load generator.

    make peer-venvs && python -m benchmarks peers [--bundle bundles/atis]

Each peer runs the service's own Engine per batch (`benchmarks.peers.model`: tokenise → the
bundle's ONNX graph → decode to intent + slots) behind its own protocol (KServe v2 gRPC
`ModelInfer`) and dynamic batcher; ours answers nlu.v1 `Parse`. All three servers run at once;
at each concurrency (closed loop, `benchmarks.load`) they take turns window by window (A, B, C,
then B, C, A, ...) until each one's throughput and p50 are stable (10 % over its last three
windows) or a cap, so slow drifts of the machine hit all alike. Per row: throughput, p50/p90/
p99, errors, the server's CPU seconds per 1,000 answers (its process tree) and the load
generator's CPU share. Then, per server, an open loop at 3× its own capacity (from 2 processes);
ours with its shipped admission defaults, the closed loops with its limits off, as the peers
have none. Ours runs twice: one process (`nlu`) and `--workers` processes sharing the port
(`nlu, N workers`, `service.workers`); the targets are given for each. Then one process again
at 3× its capacity with admission kept out of Python (`ADMISSION`): gRPC core's pending-call
shed, and an HTTP/2 stream limit per connection (the load generator's open loop holds
2 × SHARED_CONNECTIONS connections; calls over the limit wait in the client or are refused by
the transport). Before measuring, the first utterances' answers are compared: every server must
give the same intent and slots.
"""

from __future__ import annotations

import argparse
import itertools
import json
import struct
from pathlib import Path

import grpc
from matplotlib.figure import Figure

from benchmarks.load.loops import SHARED_CONNECTIONS, Window, open_loop
from benchmarks.load.meta import run_meta
from benchmarks.load.sweep import sweep, window_stats, with_server_cpu
from benchmarks.load.targets import KServeGrpc, NluGrpc, kserve_request
from benchmarks.peers import batching
from benchmarks.peers.launch import PEERS, PeerProcess
from benchmarks.suite import BundleSuite, save_figure, write_json
from export.data import read_dataset
from export.fetch import resolve_dataset
from service.client import request
from service.contract.paths import PROJECT_ROOT
from service.gen.nlu.v1 import nlu_pb2_grpc
from service.process import ServerProcess

CONCURRENCY = (1, 4, 16, 64)
OVERLOAD_MULTIPLE = 3.0
PARITY_UTTERANCES = 50
NO_LIMITS = ("--max-concurrent-rpcs", "0", "--max-queue-size", "4096", "--max-queue-wait-ms", "0")
OPEN_LOOP_PROCESSES = 2
ADMISSION = {  # ours, one process, at 3× its capacity: refusals that never reach Python
    "nlu, core shed": ("--max-pending-rpcs", "4"),
    "nlu, 2 streams per connection": (
        "--max-concurrent-streams",
        "2",
        "--max-concurrent-rpcs",
        "0",
    ),
}


def our_answers(target: str, texts: list[str]) -> list[dict]:
    with grpc.insecure_channel(target) as channel:
        stub = nlu_pb2_grpc.NluServiceStub(channel)
        answers = [stub.Parse(request(t), timeout=10) for t in texts]
    return [
        {"intent": a.intent, "slots": [[s.name, s.value, s.start, s.end] for s in a.slots]}
        for a in answers
    ]


def kserve_answers(target: str, texts: list[str]) -> list[dict]:
    """The `frame` output of each: raw BYTES (4-byte length, then the JSON; Triton) or typed
    contents (MLServer)."""
    from benchmarks.gen.inference import predict_v2_pb2_grpc as pb_grpc

    answers = []
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for text in texts:
            reply = stub.ModelInfer(kserve_request(text, "nlu"))
            if reply.raw_output_contents:
                raw = reply.raw_output_contents[0]
                (size,) = struct.unpack("<I", raw[:4])
                frame = json.loads(raw[4 : 4 + size])
            else:
                frame = json.loads(reply.outputs[0].contents.bytes_contents[0])
            slots = [[s["slot"], s["value"], s["start"], s["end"]] for s in frame["slots"]]
            answers.append({"intent": frame["intent"], "slots": slots})
    return answers


def slug(name: str) -> str:
    """A server's name as a file name part: `nlu, 2 workers` → `nlu-2-workers`."""
    return name.replace(", ", "-").replace(" ", "-")


def sending_s(window: Window) -> float:
    """How long the open loop took to send its calls (the window also waits for the answers)."""
    starts = [c.started for c in window.calls]
    return max(starts) - min(starts) if len(starts) > 1 else window.wall_s


def overload_row(name: str, target, pid: int, texts, capacity_rps: float, seconds: float) -> dict:
    rate = OVERLOAD_MULTIPLE * capacity_rps
    window, cpu = with_server_cpu(
        pid, lambda: open_loop(target, texts, rate, seconds, workers=OPEN_LOOP_PROCESSES)
    )
    row = {"server": name, "concurrency": None, **window_stats([(window, cpu)])}
    return {
        **row,
        "offered_rps": round(rate, 1),
        "sent_rps": round(len(window.calls) / sending_s(window), 1),
        "capacity_rps": capacity_rps,
        "answered_over_capacity": round(row["throughput_rps"] / capacity_rps, 2),
    }


class PeersSuite(BundleSuite):
    name = "peers"
    help = "the same bundle under Triton and MLServer vs this service: one load generator"
    in_default_run = False  # needs `make peer-venvs`

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", default="atis")
        parser.add_argument("--bundle", type=Path, help="default: bundles/DATA")
        parser.add_argument("--window-s", type=float, default=3.0)
        parser.add_argument("--max-windows", type=int, default=6)
        parser.add_argument("--overload-s", type=float, default=10.0)
        parser.add_argument(
            "--workers", type=int, default=2, help="ours as this many processes too (below 2: not)"
        )

    def skip_reason(self, args: argparse.Namespace, out_dir: Path) -> str | None:
        missing = [p.venv for p in PEERS if not p.python.is_file()]
        if missing:
            return f"needs the peers' virtual environments {missing} (make peer-venvs)"
        return super().skip_reason(args, out_dir)

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        bundle = self.bundle(args)
        texts = [ex.text for ex in read_dataset(resolve_dataset(args.data)).splits["test"]]
        levels, window_s, max_windows = CONCURRENCY, args.window_s, args.max_windows
        overload_s = args.overload_s
        if args.quick:
            levels, window_s, max_windows, overload_s = (1, 4), 0.3, 3, 1.0
        logs = PROJECT_ROOT / "logs"
        logs.mkdir(exist_ok=True)
        ours = {"nlu": ()}
        if args.workers > 1:
            ours[f"nlu, {args.workers} workers"] = ("--workers", str(args.workers))
        launched: dict[str, ServerProcess] = {}
        peers: dict[str, PeerProcess] = {}
        try:
            for name, flags in ours.items():
                log = logs / f"peers-{slug(name)}.log"
                launched[name] = ServerProcess.launch(bundle, log, *NO_LIMITS, *flags)
            for peer in PEERS:
                peers[peer.name] = peer.launch(bundle, logs / f"peers-{peer.name}.log")
            for server in launched.values():
                server.wait_serving()
            ready_s = {name: round(p.wait_ready(), 2) for name, p in peers.items()}
            servers = {n: (NluGrpc(s.target), s.process.pid) for n, s in launched.items()}
            servers |= {n: (KServeGrpc(p.target), p.process.pid) for n, p in peers.items()}
            sample = texts[:PARITY_UTTERANCES]
            expected = our_answers(launched["nlu"].target, sample)
            parity = {n: kserve_answers(p.target, sample) == expected for n, p in peers.items()}
            parity |= {
                n: our_answers(s.target, sample) == expected
                for n, s in launched.items()
                if n != "nlu"
            }
            rows = sweep(servers, texts, levels, window_s, max_windows)
            capacity = {
                n: max(r["throughput_rps"] for r in rows if r["server"] == n) for n in servers
            }
            overload = []
            for name, peer in peers.items():  # each stopped after: its backlog would linger
                overload.append(
                    overload_row(name, *servers[name], texts, capacity[name], overload_s)
                )
                peer.stop()
        finally:
            for process in (*launched.values(), *peers.values()):
                process.stop()
        for position, (name, flags) in enumerate(ours.items()):
            log = logs / f"peers-{slug(name)}-defaults.log"
            row = overload_ours(name, bundle, log, flags, texts, capacity[name], overload_s)
            overload.insert(position, row)
        for name, flags in ADMISSION.items():
            log = logs / f"peers-{slug(name)}.log"
            overload.append(
                overload_ours(name, bundle, log, flags, texts, capacity["nlu"], overload_s)
            )
        result = {
            "rows": rows,
            "overload": overload,
            "targets": {name: targets(rows, overload, name) for name in ours}
            | {
                r["server"]: {"overload_answered_over_capacity": r["answered_over_capacity"]}
                for r in overload
                if r["server"] in ADMISSION
            },
            "meta": {
                **run_meta(),
                "bundle": str(bundle),
                "dataset": args.data,
                "answers_match_ours": parity,
                "ready_s": ready_s,
                "versions": {p.name: p.version() for p in PEERS},
                "batching": {"triton": batching.TRITON, "mlserver": batching.MLSERVER},
                "nlu_settings": "closed loops: "
                + " ".join(NO_LIMITS)
                + "; overload: defaults; "
                + "; ".join(f"{n}: {' '.join(f) or 'one process'}" for n, f in ours.items()),
                "load_cpu_share": {  # of one core, the highest of any row
                    "closed_loop": max(r["load_cpu_share"] for r in rows),
                    "open_loop": max(r["load_cpu_share"] for r in overload),
                },
                "load_generator": "one Python process (grpc.aio) for closed loops, "
                f"{OPEN_LOOP_PROCESSES} for the open loop, each sharing {SHARED_CONNECTIONS} "
                "connections among its callers; it shares the cores with the server; its CPU "
                "share is in every row",
                "admission": {name: " ".join(flags) for name, flags in ADMISSION.items()},
                "window_s": window_s,
                "overload_multiple": OVERLOAD_MULTIPLE,
                "quick": args.quick,
            },
        }
        write_json(out_dir / "peers.json", result)
        self.plot(rows, out_dir / "peers.png")
        return result

    def plot(self, rows: list[dict], path: Path) -> None:
        fig = Figure(figsize=(10, 4))
        throughput, latency = fig.subplots(1, 2)
        for name, group in itertools.groupby(
            sorted(rows, key=lambda r: r["server"]), key=lambda r: r["server"]
        ):
            group = sorted(group, key=lambda r: r["concurrency"])
            levels = [r["concurrency"] for r in group]
            throughput.plot(levels, [r["throughput_rps"] for r in group], marker="o", label=name)
            latency.plot(levels, [r["p50_ms"] for r in group], marker="o", label=name)
        for ax, label in ((throughput, "answers / s"), (latency, "p50 ms")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency (closed loop)")
            ax.set_ylabel(label)
            ax.legend()
        throughput.set_title("Throughput")
        latency.set_title("Median latency")
        save_figure(fig, path)

    def summary(self, result: dict) -> str:
        lines = [
            "| server | concurrency | answers/s | p50 / p90 / p99 ms | errors | server CPU s "
            "per 1k | load generator CPU |",
            "|---" * 7 + "|",
        ]
        for r in [*result["rows"], *result["overload"]]:
            level = r["concurrency"] if r["concurrency"] is not None else (
                f"open loop {r['offered_rps']} rps offered ({r['sent_rps']} sent)")  # fmt: skip
            lines.append(
                f"| {r['server']} | {level} | {r['throughput_rps']} | {r['p50_ms']} / "
                f"{r['p90_ms']} / {r['p99_ms']} | {r['errors']} | {r['server_cpu_s_per_1k']} | "
                f"{r['load_cpu_share']} |"
            )
        lines.append("")
        for name, t in result["targets"].items():
            if name in result["meta"].get("admission", {}):
                lines.append(
                    f"{name} ({result['meta']['admission'][name]}): answered at 3× overload "
                    f"{t['overload_answered_over_capacity']}x one process's capacity."
                )
                continue
            lines.append(
                f"Targets, {name}: throughput at concurrency 64 "
                f"{t['throughput_c64_over_best_peer']}x the better peer (≥ 1.5 asked); p50 at "
                f"concurrency 1 {t['p50_c1_over_best_peer']}x the better peer (≤ 0.8 asked); "
                f"answered at 3× overload {t['overload_answered_over_capacity']}x its capacity "
                "(≥ 0.8 asked)."
            )
        lines.append(
            f"Answers equal to ours on the first {PARITY_UTTERANCES} utterances: "
            f"{result['meta']['answers_match_ours']}."
        )
        return "\n".join(lines)


def overload_ours(
    name: str,
    bundle: Path,
    log: Path,
    flags: tuple[str, ...],
    texts: list[str],
    capacity_rps: float,
    seconds: float,
) -> dict:
    """Ours started alone with `flags`, at 3× `capacity_rps`: no other server's backlog around."""
    server = ServerProcess.launch(bundle, log, *flags)
    try:
        server.wait_serving()
        return overload_row(
            name, NluGrpc(server.target), server.process.pid, texts, capacity_rps, seconds
        )
    finally:
        server.stop()


def targets(rows: list[dict], overload: list[dict], ours: str) -> dict:
    def at(server: str, concurrency: int) -> dict | None:
        found = [r for r in rows if r["server"] == server and r["concurrency"] == concurrency]
        return found[0] if found else None

    top = max(r["concurrency"] for r in rows)
    peers = sorted({r["server"] for r in rows if not r["server"].startswith("nlu")})
    best_throughput = max(at(p, top)["throughput_rps"] for p in peers)
    best_p50 = min(at(p, 1)["p50_ms"] for p in peers)
    (overloaded,) = [r for r in overload if r["server"] == ours]
    return {
        "top_concurrency": top,
        "throughput_c64_over_best_peer": round(
            at(ours, top)["throughput_rps"] / best_throughput, 2
        ),
        "p50_c1_over_best_peer": round(at(ours, 1)["p50_ms"] / best_p50, 2),
        "overload_answered_over_capacity": overloaded["answered_over_capacity"],
    }


SUITE = PeersSuite()
