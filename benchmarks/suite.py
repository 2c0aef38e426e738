"""What a benchmark suite is: one module, one `Suite` subclass, registered in `benchmarks.SUITES`.

A suite measures, writes `NAME.json` (with `meta`), a CSV where a table fits and PNG plots into
the output folder, and renders a markdown summary of its JSON for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
from abc import ABC, abstractmethod
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure

from service.contract.paths import PROJECT_ROOT


class Suite(ABC):
    name: str
    help: str
    in_default_run: bool = True
    """False for suites too long for `make bench` (run them by name)."""

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Suite-specific options; every option needs a default so `all` can run the suite."""

    def skip_reason(self, args: argparse.Namespace, out_dir: Path) -> str | None:
        """Why the suite cannot run here (missing model, ...), or None."""
        return None

    @abstractmethod
    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        """Measure, write the result files into out_dir, return the JSON written."""

    def load_result(self, results: Path) -> dict | None:
        """This suite's committed result in `results`, or None when it has not run."""
        path = results / f"{self.name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    @abstractmethod
    def summary(self, result: dict) -> str:
        """Markdown for benchmarks/README.md, rendered from the JSON alone."""


class BundleSuite(Suite):
    """A suite that measures a served bundle: `--bundle`, else bundles/DATA."""

    def bundle(self, args: argparse.Namespace) -> Path:
        return args.bundle or PROJECT_ROOT / "bundles" / args.data

    def skip_reason(self, args: argparse.Namespace, out_dir: Path) -> str | None:
        if not (self.bundle(args) / "config.json").is_file():
            return f"needs a bundle at {self.bundle(args)} (make export)"
        return None


def datasets_in(report: dict) -> list[str]:
    """The dataset keys of a per-dataset result (everything but `meta`)."""
    return sorted(k for k in report if k != "meta")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def save_figure(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
