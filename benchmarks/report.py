"""Regenerate the results summaries from the committed JSON, never by hand.

benchmarks/README.md gets every suite's summary between its markers; the top-level README.md gets
the accuracy table.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.meta import PROJECT_ROOT

START, END = "<!-- results:start -->", "<!-- results:end -->"


def render(text: str, block: str, start: str = START, end: str = END) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}\n{end}{tail}"


def suite_result(results: Path, name: str) -> dict | None:
    if name == "experiments":
        from benchmarks.experiments import collect

        folder = results / "experiments"
        return collect(folder) if folder.is_dir() and any(folder.glob("*.json")) else None
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_reports(results: Path) -> list[Path]:
    from benchmarks.suites import SUITES

    bench_readme = PROJECT_ROOT / "benchmarks" / "README.md"
    text = bench_readme.read_text()
    for name, suite in SUITES.items():
        result = suite_result(results, name)
        block = suite.summary(result) if result else f"_No `{name}` results yet._"
        text = render(text, block, f"<!-- {name}:start -->", f"<!-- {name}:end -->")
    bench_readme.write_text(text)
    written = [bench_readme]
    accuracy = suite_result(results, "accuracy")
    if accuracy:
        readme = PROJECT_ROOT / "README.md"
        readme.write_text(render(readme.read_text(), SUITES["accuracy"].summary(accuracy)))
        written.append(readme)
    return written
