"""Benchmark harness CLI.

    python -m benchmarks SUITE [--quick] [--out-dir DIR] [suite options]   exit 1 if it cannot run
    python -m benchmarks all [--quick]      every suite that applies (make bench)
    python -m benchmarks report             regenerate the summaries from the JSON results

Results go to benchmarks/results/ (committed); --quick runs each suite on a small sample into
benchmarks/results/quick/ (ignored by git) unless --out-dir says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# Before torch loads OpenMP: idle OpenMP threads must sleep, not spin, while the engine suite
# measures another runtime interleaved in this process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from benchmarks.report import write_reports
from benchmarks.suites import SUITES
from service.contract.paths import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sample, under a minute")
    parser.add_argument("--out-dir", type=Path, help="default: benchmarks/results[/quick]")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    sub = p.add_subparsers(dest="suite", required=True)
    for suite in SUITES.values():
        sp = sub.add_parser(suite.name, help=suite.help)
        add_common(sp)
        suite.add_arguments(sp)
    add_common(sub.add_parser("all", help="every suite that applies, with default options"))
    sub.add_parser("report", help="regenerate benchmarks/README.md and README.md summaries")
    return p


def out_dir_for(args: argparse.Namespace) -> Path:
    return args.out_dir or (RESULTS / "quick" if args.quick else RESULTS)


def suite_args(name: str, args: argparse.Namespace) -> argparse.Namespace:
    """The suite's own defaults plus the common options given to `all`."""
    parsed = build_parser().parse_args([name])
    parsed.quick, parsed.out_dir = args.quick, args.out_dir
    return parsed


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("export").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    if args.suite == "report":
        for path in write_reports(RESULTS):
            print(f"wrote {path}")
        return 0
    names = (
        [args.suite] if args.suite != "all" else [n for n, s in SUITES.items() if s.in_default_run]
    )
    out_dir = out_dir_for(args)
    for name in names:
        suite = SUITES[name]
        run_args = args if args.suite != "all" else suite_args(name, args)
        reason = suite.skip_reason(run_args, out_dir)
        if reason and args.suite != "all":  # asked for by name: not measuring is a failure
            print(f"[{name}] not run: {reason}", file=sys.stderr)
            return 1
        if reason:
            print(f"[{name}] skipped: {reason}")
            continue
        result = suite.run(run_args, out_dir)
        print(f"[{name}] wrote {out_dir}\n{suite.summary(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
