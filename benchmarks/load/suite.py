"""Suite `load`: point the load generator at a running service, as `perf_analyzer -u` does for
Triton.

    python -m benchmarks load --target HOST:PORT [--concurrency 1,4,16,64] [--rate 200,400]
        [--protocol grpc|http|kserve] [--texts FILE | --data atis] [--tls-ca CA.pem
        [--tls-cert C.pem --tls-key K.pem]] [--token T] [--out-dir DIR]

Closed loop at each concurrency (warm-up, then windows until throughput and p50 are stable or
`--max-windows`: `benchmarks.load.sweep`), then an open loop at each `--rate` (from
`--workers` processes). Per row: throughput, p50/p90/p99 of the answered calls, errors by
code, the load generator's CPU share (it may share the cores with the server: say so when it
does). `--server-pid` adds the server's CPU seconds per 1,000 answers when it runs here.
Writes load.json and load.png. `--texts` reads one utterance per line (blank lines skipped).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from matplotlib.figure import Figure

from benchmarks.load.loops import open_loop
from benchmarks.load.meta import run_meta
from benchmarks.load.sweep import sweep, window_stats, with_server_cpu
from benchmarks.load.targets import KServeGrpc, NluGrpc, NluHttp, Target
from benchmarks.suite import Suite, save_figure, write_json
from export.data import read_dataset
from export.fetch import resolve_dataset
from service.client import Credentials


def levels(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v]


def rates(value: str) -> list[float]:
    return [float(v) for v in value.split(",") if v]


def read_texts(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"{path}: cannot read utterances ({e})") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise SystemExit(f"{path}: no utterances (one per line)")
    return texts


def build_target(args: argparse.Namespace) -> Target:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("--tls-cert and --tls-key go together (mTLS)")
    if args.tls_cert is not None and args.tls_ca is None:
        raise SystemExit("--tls-cert needs --tls-ca (the server's CA)")
    credentials = Credentials(args.tls_ca, args.tls_cert, args.tls_key, args.token)
    if args.protocol == "grpc":
        return NluGrpc(args.target, credentials)
    if args.protocol == "http":
        scheme = "https" if args.tls_ca else "http"
        url = args.target if "://" in args.target else f"{scheme}://{args.target}"
        return NluHttp(url, credentials)
    return KServeGrpc(args.target, model=args.model)


class LoadSuite(Suite):
    name = "load"
    help = "closed-loop concurrency and open-loop rate sweeps against a running service"
    in_default_run = False  # needs --target

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--target", help="HOST:PORT (http: a URL or HOST:PORT)")
        parser.add_argument("--protocol", choices=("grpc", "http", "kserve"), default="grpc")
        parser.add_argument("--model", default="nlu", help="kserve: the model name")
        parser.add_argument("--texts", type=Path, help="utterances, one per line")
        parser.add_argument("--data", default="atis", help="else this dataset's test split")
        parser.add_argument("--concurrency", type=levels, default=[1, 4, 16, 64])
        parser.add_argument("--rate", type=rates, default=[], help="open-loop calls/s")
        parser.add_argument("--window-s", type=float, default=3.0)
        parser.add_argument("--max-windows", type=int, default=8)
        parser.add_argument("--warmup-s", type=float, default=2.0)
        parser.add_argument("--rate-s", type=float, default=10.0, help="each open-loop run")
        parser.add_argument("--workers", type=int, default=2, help="open-loop processes")
        parser.add_argument("--tls-ca", type=Path)
        parser.add_argument("--tls-cert", type=Path)
        parser.add_argument("--tls-key", type=Path)
        parser.add_argument("--token", help="bearer token")
        parser.add_argument("--server-pid", type=int, help="the server, when it runs here")

    def skip_reason(self, args: argparse.Namespace, out_dir: Path) -> str | None:
        return None if args.target else "needs --target HOST:PORT"

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        target = build_target(args)
        if args.texts is not None:
            texts = read_texts(args.texts)
        else:
            texts = [ex.text for ex in read_dataset(resolve_dataset(args.data)).splits["test"]]
        window_s, max_windows, warmup_s, rate_s = (
            (0.3, 3, 0.2, 0.5) if args.quick
            else (args.window_s, args.max_windows, args.warmup_s, args.rate_s)
        )  # fmt: skip
        servers = {args.protocol: (target, args.server_pid)}
        rows = sweep(servers, texts, args.concurrency, window_s, max_windows, warmup_s)
        open_rows = []
        for rate in args.rate:
            run = functools.partial(open_loop, target, texts, rate, rate_s, args.workers)
            measured = with_server_cpu(args.server_pid, run)
            open_rows.append({"rate_rps": rate, **window_stats([measured])})
        result = {
            "rows": rows,
            "open_loop": open_rows,
            "meta": {
                **run_meta(),
                "target": args.target,
                "protocol": args.protocol,
                "tls": args.tls_ca is not None,
                "mtls": args.tls_cert is not None,
                "utterances": len(texts),
                "texts": str(args.texts) if args.texts else f"{args.data} test split",
                "window_s": window_s,
                "quick": args.quick,
            },
        }
        write_json(out_dir / "load.json", result)
        self.plot(rows, out_dir / "load.png")
        return result

    def plot(self, rows: list[dict], path: Path) -> None:
        fig = Figure(figsize=(9, 4))
        throughput, latency = fig.subplots(1, 2)
        levels = [r["concurrency"] for r in rows]
        throughput.plot(levels, [r["throughput_rps"] for r in rows], marker="o")
        for p in ("p50_ms", "p90_ms", "p99_ms"):
            latency.plot(levels, [r[p] for r in rows], marker="o", label=p.split("_")[0])
        for ax, label in ((throughput, "answers / s"), (latency, "ms")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency (closed loop)")
            ax.set_ylabel(label)
        latency.legend()
        save_figure(fig, path)

    def summary(self, result: dict) -> str:
        lines = [
            "| load | answers/s | p50 / p90 / p99 ms | errors | load generator CPU |",
            "|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            lines.append(
                f"| concurrency {r['concurrency']} | {r['throughput_rps']} | {r['p50_ms']} / "
                f"{r['p90_ms']} / {r['p99_ms']} | {r['errors']} | {r['load_cpu_share']} |"
            )
        for r in result["open_loop"]:
            lines.append(
                f"| {r['rate_rps']} calls/s offered | {r['throughput_rps']} | {r['p50_ms']} / "
                f"{r['p90_ms']} / {r['p99_ms']} | {r['errors']} | {r['load_cpu_share']} |"
            )
        meta = result["meta"]
        lines.append(f"\n{meta['protocol']} at {meta['target']}, {meta['texts']}.")
        storms = [r for r in result["rows"] if refused(r) > r["requests"] - r["errors"]]
        if storms:
            levels = ", ".join(
                f"{r['concurrency']} ({refused(r):,} RESOURCE_EXHAUSTED)" for r in storms
            )
            lines.append(
                f"The server refused more calls than it answered at concurrency {levels}: "
                "these callers send again at once, so its CPU goes to "
                "refusals. Clients that back off (the shipped one does) do not do this; a "
                "concurrency limit at or above the callers' (`--max-concurrent-rpcs`) avoids it."
            )
        return "\n".join(lines)


def refused(row: dict) -> int:
    return row.get("errors_by_code", {}).get("RESOURCE_EXHAUSTED", 0)


SUITE = LoadSuite()
