from __future__ import annotations

import json

from benchmarks.engine import run as run_engine
from benchmarks.report import END, START, accuracy_table, render


def test_engine_quick_run_writes_every_cell(tiny_bundle, tiny_model, small_atis, tmp_path):
    out = tmp_path / "engine.json"
    report = run_engine(tiny_bundle, tiny_model, str(small_atis), quick=True, results=out)
    assert json.loads(out.read_text()) == report
    cells = {(r["runtime"], r["batch"], r["threads"]) for r in report["rows"]}
    assert len(cells) == 3 * 3 * 2
    for row in report["rows"]:
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["utterances_per_s"] > 0
    assert {"command", "git_commit", "date", "cpu", "cores", "packages"} <= set(report["meta"])
    assert len(report["ratios"]) == 2 * 3 * 2


def test_report_renders_the_results_table_between_markers():
    report = {
        "atis": {"torch": {"intent_acc": 97.1, "slot_f1": 95.2, "sentence_acc": 86.3}},
        "meta": {"git_commit": "abc", "cpu": "cpu", "cores": 2,
                 "runs": {"atis": {"epochs_run": 9, "best_epoch": 7, "train_seconds": 600}}},
    }
    readme = f"intro\n{START}\nold table\n{END}\nrest\n"
    out = render(readme, accuracy_table(report))
    assert "old table" not in out and "| atis | MiniLM-L6 joint (torch) | 97.10 |" in out
    assert out.startswith("intro\n") and out.endswith("rest\n")
