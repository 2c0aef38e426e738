"""Smoke test: the harness runs its suites end to end in --quick mode, so it cannot silently rot."""

from __future__ import annotations

import json

from benchmarks.__main__ import build_parser, main
from benchmarks.measure import WindowPolicy, is_stable, measure_interleaved
from benchmarks.report import END, START, render


def test_quick_accuracy_then_engine(tiny_encoder, tmp_path, capsys):
    assert (
        main(["accuracy", "--quick", "--out-dir", str(tmp_path), "--encoder", str(tiny_encoder)])
        == 0
    )
    accuracy = json.loads((tmp_path / "accuracy.json").read_text())
    assert set(accuracy["atis"]) == {"torch", "onnx_fp32", "onnx_int8"}
    assert accuracy["meta"]["runs"]["atis"]["test_examples"] == 50
    for name in ("accuracy.csv", "accuracy.png"):
        assert (tmp_path / name).stat().st_size > 0

    assert main(["engine", "--quick", "--out-dir", str(tmp_path)]) == 0
    engine = json.loads((tmp_path / "engine.json").read_text())
    cells = {(r["runtime"], r["batch"], r["threads"]) for r in engine["rows"]}
    assert len(cells) == 3 * 3 * 2 and len(engine["ratios"]) == 2 * 3 * 2
    for row in engine["rows"]:
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["windows"] >= 1 and isinstance(row["stable"], bool)
    assert {"command", "git_commit", "date", "cpu", "cores", "packages"} <= set(engine["meta"])
    for name in ("engine.csv", "engine_latency.png", "engine_throughput.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "onnx_int8" in capsys.readouterr().out

    assert main(["serve", "--quick", "--out-dir", str(tmp_path), "--server-threads", "1"]) == 0
    serve = json.loads((tmp_path / "serve.json").read_text())
    assert [r["concurrency"] for r in serve["rows"]] == [1, 4]
    for row in serve["rows"]:
        assert row["throughput_rps"] > 0 and row["p50_ms"] <= row["p99_ms"]
        assert row["server_stages"]["inference_ms"] > 0
    assert serve["in_process_p50_ms"] > 0
    assert (tmp_path / "serve.png").stat().st_size > 0


def test_engine_is_skipped_without_a_bundle(tmp_path, capsys):
    assert main(["engine", "--quick", "--out-dir", str(tmp_path)]) == 0
    assert "skipped: needs" in capsys.readouterr().out


def test_every_suite_runs_with_defaults_only():
    parser = build_parser()
    for name in ("accuracy", "engine", "serve", "experiments"):
        parser.parse_args([name])


def test_stability_rule_and_interleaving():
    steady = [{"utterances_per_s": 100.0, "p50_ms": 10.0}] * 3
    noisy = [*steady[:2], {"utterances_per_s": 150.0, "p50_ms": 10.0}]
    assert is_stable(steady, 0.1) and not is_stable(noisy, 0.1) and not is_stable(steady[:2], 0.1)
    order: list[str] = []
    stats = measure_interleaved(
        {"a": lambda b: order.append("a"), "b": lambda b: order.append("b")},
        [["x"], ["y"]],
        WindowPolicy(
            window_seconds=0.01, max_windows=3, warmup_iterations=1, min_iterations_per_window=2
        ),
    )
    assert order[:6] == ["a", "b"] * 3
    assert set(stats) == {"a", "b"} and stats["a"]["windows"] <= 3


def test_render_replaces_only_between_markers():
    text = f"intro\n{START}\nold\n{END}\nrest\n"
    out = render(text, "new")
    assert out == f"intro\n{START}\nnew\n{END}\nrest\n"
