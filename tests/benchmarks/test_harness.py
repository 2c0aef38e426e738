"""Smoke test: the harness runs its suites end to end in --quick mode, so it cannot silently rot."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from benchmarks.__main__ import build_parser, main
from benchmarks.load.measure import WindowPolicy, is_stable, measure_interleaved
from benchmarks.report import END, START, render
from benchmarks.suites import SUITES


def test_quick_accuracy_then_engine(tiny_encoder, tmp_path, capsys):
    assert (
        main(["accuracy", "--quick", "--out-dir", str(tmp_path), "--encoder", str(tiny_encoder)])
        == 0
    )
    accuracy = json.loads((tmp_path / "accuracy.json").read_text())
    assert set(accuracy["atis"]) == {"torch", "onnx_fp32", "onnx_int8"}
    assert accuracy["meta"]["runs"]["atis"]["test_examples"] == 50
    agreement = accuracy["meta"]["runs"]["atis"]["alone_vs_batched"]
    assert agreement["utterances"] == 50
    assert agreement["intents_identical"] == agreement["tags_identical"] == 100.0
    assert agreement["max_confidence_gap"] <= 1e-3
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
    limit = engine["limit"]["fp32"]  # the work per utterance, the peak, the kernels run
    assert limit["gmacs_per_utterance"] > 0 and limit["numpy_fp32_gemm_gmacs"] > 0
    assert limit["nominal_peak"]["fp32_macs_per_cycle_per_core"] >= 8
    assert limit["ort_kernel_time_pct"] and sum(limit["ort_kernel_time_pct"].values()) <= 100.5
    solo = engine["solo_session"]  # the tiny bundle holds int8: the A/B ran
    assert solo["solo_p50_ms"] > 0 and solo["one_thread_p50_ms"] > 0
    for name in ("engine.csv", "engine_latency.png", "engine_throughput.png"):
        assert (tmp_path / name).stat().st_size > 0
    out = capsys.readouterr().out
    assert "onnx_int8" in out and "Solo session (int8, batch 1, 2 threads" in out

    assert main(["serve", "--quick", "--out-dir", str(tmp_path), "--server-threads", "1"]) == 0
    serve = json.loads((tmp_path / "serve.json").read_text())
    levels = [("grpc", 1), ("grpc", 4), ("http", 1), ("http", 4)]
    levels += [("grpc, traced", 1), ("http, traced", 1), ("grpc, 2 workers", 1)]
    levels += [("grpc, 2 workers", 4)]
    assert [(r["protocol"], r["concurrency"]) for r in serve["rows"]] == levels
    assert set(serve["p50_c1_over_in_process"]) == {p for p, c in levels if c == 1}
    for row in serve["rows"]:
        assert row["throughput_rps"] > 0 and row["p50_ms"] <= row["p99_ms"]
        assert row["server_stages"]["inference_ms"] > 0
    assert serve["in_process_p50_ms"] > 0
    assert serve["in_process_tokenise_ms_per_utt"] > 0 and serve["in_process_decode_ms_per_utt"] > 0
    assert set(serve["in_process_after_over_before"]) >= {"utt_per_s", "p50_ms"}
    assert set(serve["top_concurrency_over_in_process_model"]) == {"grpc", "grpc, 2 workers"}
    assert set(serve["paired_targets"]) == {"grpc", "grpc, 2 workers"}
    for paired in serve["paired_targets"].values():
        for ratio in ("top_concurrency_over_in_process_model", "p50_c1_over_in_process"):
            assert 0 < paired[ratio]["min"] <= paired[ratio]["median"] <= paired[ratio]["max"]
    assert (tmp_path / "serve.png").stat().st_size > 0


def test_a_suite_asked_for_by_name_fails_when_it_cannot_run(tmp_path, capsys):
    """Without a bundle the engine suite cannot measure: by name that is exit 1 and the reason,
    not a silent success."""
    assert main(["engine", "--quick", "--out-dir", str(tmp_path)]) == 1
    assert "[engine] not run: needs" in capsys.readouterr().err


def test_quick_experiments(tiny_encoder, small_atis, tmp_path, capsys):
    args = ["experiments", "--quick", "--out-dir", str(tmp_path), "--data", str(small_atis)]
    assert main([*args, "--encoder", str(tiny_encoder), "--threads", "1"]) == 0
    record = json.loads((tmp_path / "experiments" / "atis-small-baseline.json").read_text())
    assert record["variant"] == "baseline" and record["epochs_run"] == 1
    assert set(record["test"]) == {"intent_acc", "slot_f1", "sentence_acc"}
    assert (tmp_path / "artifacts" / "experiments" / "atis-small-baseline").is_dir()
    assert "atis-small baseline: dev" in capsys.readouterr().out


def suites_run_by_tests() -> set[str]:
    """First words of the argument lists in this folder's tests (`main(["engine", ...])`,
    `args = ["contention", ...]`): the suites they run."""
    names = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant):
                names.add(node.elts[0].value)
    return names


def test_every_registered_suite_is_run_end_to_end_by_a_test():
    assert set(SUITES) <= suites_run_by_tests()
    parser = build_parser()
    for name in SUITES:
        parser.parse_args([name])  # and each runs from its defaults alone


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


def test_quick_overload(tiny_bundle, tmp_path):
    args = ["overload", "--quick", "--out-dir", str(tmp_path), "--bundle", str(tiny_bundle)]
    assert main([*args, "--data", "atis"]) == 0
    rows = json.loads((tmp_path / "overload.json").read_text())["rows"]
    assert [r["max_queue_wait_ms"] for r in rows] == [0.0, 100.0]
    for row in rows:
        assert row["capacity_rps"] > 0 and row["offered_rps"] > row["capacity_rps"]
        assert row["lost"] == 0, row["failures"]
        # A few calls of a Python load generator at 3x capacity end CANCELLED with no server-side
        # trace (sporadic, unexplained; see the closing note of stop 14): tolerated, never others.
        assert set(row["failures"]) <= {"CANCELLED: CANCELLED"}, row["failures"]
        assert row["rss_max_mb"] > 0


def test_quick_reliability(tiny_bundle, tmp_path):
    args = ["reliability", "--quick", "--out-dir", str(tmp_path), "--bundle", str(tiny_bundle)]
    assert main([*args, "--data", "atis"]) == 0
    result = json.loads((tmp_path / "reliability.json").read_text())
    rows = {r["scenario"]: r for r in result["scenarios"]}
    assert list(rows) == [
        "overload", "generator_down", "generator_slow", "generator_http_500",
        "generator_garbage", "shutdown", "crash_restart", "rollout_shipped_client_config",
        "rollout_grpc_defaults",
    ]  # fmt: skip
    for name, row in rows.items():
        assert row["lost"] == 0, (name, row["failures"])
        assert row["answered"] > 0, name
    for fault in ("down", "slow", "http_500", "garbage"):
        row = rows[f"generator_{fault}"]
        # Shed calls (the queue's time limit on a busy CPU) are refusals with a retry hint, not
        # failures: how many there are depends on the machine's speed, which no test may.
        assert row["failed"] == 0, row["failures"]
        assert row["generator_answers_after_heal"] == 5, fault  # the probe closed the circuit
    shutdown = rows["shutdown"]  # exited within its grace: no call it had begun was cut short
    assert shutdown["exit_code"] == 0 and shutdown["failed"] == 0, shutdown["failures"]
    assert shutdown["sigterm_to_exit_s"] < shutdown["drain_grace_s"]
    crash = rows["crash_restart"]
    assert crash["failed"] <= 8 and crash["after_restart_answered"] == crash["after_restart_sent"]
    rollout = rows["rollout_shipped_client_config"]  # three servers restarted in turn
    assert rollout["answered"] == rollout["sent"] > 0, rollout["failures"]
    assert [r["exit_code"] for r in rollout["restarts"]] == [0, 0, 0]
    assert (tmp_path / "reliability.png").is_file()


def test_quick_open_world(tiny_clinc_model, small_clinc, tiny_lm, tmp_path):
    from export.onnx import build_bundle

    bundle = tmp_path / "knn-bundle"  # a thresholded detector, so the generator can route
    build_bundle(tiny_clinc_model, bundle, max_int8_drop=100.0, oos={"method": "knn"})
    args = ["open-world", "--quick", "--out-dir", str(tmp_path), "--bundle", str(bundle)]
    args += ["--lm", str(tiny_lm), "--data", str(small_clinc)]
    assert main(args) == 0
    result = json.loads((tmp_path / "open_world.json").read_text())
    (dataset,) = [k for k in result if k != "meta"]
    rows = {r["method"]: r for r in result[dataset]["oos"]}
    (routed,) = [r for name, r in rows.items() if "generator" in name]  # the few-shot scorer
    (skipped,) = result[dataset]["skipped_generators"]  # no fine-tuned scope model for it
    assert (skipped["generator"], skipped["for"]) == ("fine_tuned", "out of scope")
    assert "--task scope" in skipped["reason"]
    assert not routed["default"] and 0 <= routed["routed_fraction"] <= 100
    assert routed["p50_ms"] > 0 and routed["encoder_only_p50_ms"] > 0  # measured, not compared
    rows = {k: v for k, v in rows.items() if v is not routed}
    assert set(rows) == {"oos_class", "confidence", "knn", "mahalanobis"}
    assert [k for k, r in rows.items() if r["default"]] == ["knn"]
    record = json.loads((bundle / "config.json").read_text())["out_of_scope"]
    for method, row in rows.items():  # the suite re-derives the exporter's dev thresholds
        assert row["threshold"] == record["dev"][method]["threshold"]
        assert set(row) >= {"in_scope_accuracy", "oos_recall", "oos_precision", "oos_f1"}
        assert row["p50_ms"] > 0 and row["routed_fraction"] == 0.0
    assert (tmp_path / "open_world.png").is_file() and (tmp_path / "open_world.csv").is_file()
    assert main(args) == 0  # again, from the caches
    again = json.loads((tmp_path / "open_world.json").read_text())[dataset]
    assert again["oos"][-1]["oos_f1"] == routed["oos_f1"]


def test_quick_runtime_intents(small_clinc, tiny_encoder, tiny_lm, tmp_path):
    args = ["runtime-intents", "--quick", "--out-dir", str(tmp_path), "--data", str(small_clinc)]
    args += ["--lm", str(tiny_lm), "--held-out", "2"]
    args += ["--holdout-bundle", str(tmp_path / "holdout-bundle"), "--encoder", str(tiny_encoder)]
    args += ["--holdout-epochs", "3", "--threads", "1"]
    assert main(args) == 0
    result = json.loads((tmp_path / "runtime_intents.json").read_text())
    (dataset,) = [k for k in result if k != "meta"]
    runtime = result[dataset]
    (skipped,) = runtime["skipped_generators"]  # no fine-tuned scope model for it
    assert skipped["generator"] == "fine_tuned" and "--task scope" in skipped["reason"]
    assert len(runtime["held_out"]) == 2 and runtime["examples_per_intent"] == 5
    for key in ("added_accuracy", "others_accuracy_before", "others_accuracy_after"):
        assert 0.0 <= runtime[key] <= 100.0
    for key in ("oos_recall_before", "oos_recall_after"):
        assert 0.0 <= runtime[key] <= 100.0
    labels = json.loads((tmp_path / "holdout-bundle" / "labels.json").read_text())
    assert not set(runtime["held_out"]) & set(labels["intents"])  # never trained on
    assert "name: " + runtime["held_out"][0] in runtime["extension_file"]
    assert runtime["with_defaults"]["compared_with"] in ("nearest", "density")
    assert len(runtime["dev_tried"]) == 16 and "extension_margin" in runtime
    (confirm,) = runtime["generator_confirms"]  # the tiny LM chose for every utterance asked
    assert confirm["asked_fraction"] > 0 and confirm["generator_failures"] == 0
    for key in ("added_accuracy", "others_accuracy_after", "oos_recall_after"):
        assert 0.0 <= confirm[key] <= 100.0
    summary = SUITES["runtime-intents"].summary(result)
    assert "Target: ≥ 85 %" in summary and ("met" in summary)


def test_quick_closed_world(tiny_bundle, small_atis, tmp_path):
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    (bundles / small_atis.name).symlink_to(tiny_bundle)
    args = ["closed-world", "--out-dir", str(tmp_path), "--datasets", str(small_atis)]
    assert main([*args, "--bundles", str(bundles)]) == 0
    report = json.loads((tmp_path / "closed_world.json").read_text())[small_atis.name]
    assert report["exporter_choice"]["method"] == "off"  # no out-of-scope examples on dev
    (off, shipped, chosen) = report["served"]
    for run in (shipped, chosen):  # the same answers, utterance for utterance
        assert run["identical_answers"] == run["test"]["n"] == off["test"]["n"]
        assert run["test"] == off["test"] and run["test"]["flagged_out_of_scope"] == 0
    assert {f["method"] for f in report["forced"]} == {"confidence", "knn", "mahalanobis"}
    assert all(0.0 <= f["flagged"] <= 100.0 for f in report["forced"])


def test_quick_open_intent(tiny_encoder, small_clinc, tmp_path):
    """Train and export a run with --open-world, score it as the paper does, beside the
    published rows; again from the caches."""
    args = ["open-intent", "--quick", "--out-dir", str(tmp_path), "--data", str(small_clinc)]
    args += ["--runs", "0.5:0", "--epochs", "3", "--threads", "1", "--encoder", str(tiny_encoder)]
    args += ["--bundles", str(tmp_path / "bundles"), "--work", str(tmp_path / "work")]
    assert main(args) == 0
    result = json.loads((tmp_path / "open_intent.json").read_text())
    ours = [r for r in result["rows"] if not r["published"]]
    (shipped,) = [r for r in ours if r["shipped"]]
    assert shipped["known_ratio"] == 0.5 and shipped["seeds"] == [0] and shipped["budget"] == 5.0
    assert {r["method"] for r in ours} >= {"confidence", "knn", "mahalanobis", "energy"}
    for r in result["rows"]:
        assert set(r) >= {"dataset", "known_ratio", "method", "seeds", "accuracy", "macro_f1"}
        assert set(r) >= {"open_f1", "known_f1", "accuracy_std", "macro_f1_std", "published"}
        assert 0 <= r["accuracy"] <= 100 and 0 <= r["macro_f1"] <= 100
    published = [r for r in result["rows"] if r["published"]]
    assert len(published) == 9 and all(
        "Adaptive-Decision-Boundary" in r["source"] for r in published
    )
    (bundle,) = (tmp_path / "bundles").iterdir()
    record = json.loads((bundle / "config.json").read_text())["out_of_scope"]
    assert record["method"] == "knn" and "--open-world" in record["chosen_by"]
    labels = json.loads((bundle / "labels.json").read_text())["intents"]
    assert len(labels) == 3  # half of the six intents are known, no `oos` class
    (runtime,) = result["runtime_intents"]
    assert set(runtime["added"]).isdisjoint(labels) and len(runtime["added"]) == 3
    assert (tmp_path / "open_intent.png").is_file() and (tmp_path / "open_intent.csv").is_file()
    assert main(args) == 0
    again = json.loads((tmp_path / "open_intent.json").read_text())
    assert again["rows"] == result["rows"]
