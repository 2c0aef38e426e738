"""Regenerate the results summaries from the committed JSON, never by hand.

benchmarks/README.md gets every suite's summary between its markers; the top-level README.md gets
the accuracy table.
"""

from __future__ import annotations

from pathlib import Path

from service.contract.paths import PROJECT_ROOT

START, END = "<!-- results:start -->", "<!-- results:end -->"


def render(text: str, block: str, start: str = START, end: str = END) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}\n{end}{tail}"


def write_reports(results: Path) -> list[Path]:
    from benchmarks.suites import SUITES

    bench_readme = PROJECT_ROOT / "benchmarks" / "README.md"
    text = bench_readme.read_text()
    for name, suite in SUITES.items():
        result = suite.load_result(results)
        block = suite.summary(result) if result else f"_No `{name}` results yet._"
        text = render(text, block, f"<!-- {name}:start -->", f"<!-- {name}:end -->")
    bench_readme.write_text(text)
    written = [bench_readme]
    accuracy = SUITES["accuracy"].load_result(results)
    if accuracy:
        readme = PROJECT_ROOT / "README.md"
        readme.write_text(render(readme.read_text(), SUITES["accuracy"].summary(accuracy)))
        written.append(readme)
    return written
