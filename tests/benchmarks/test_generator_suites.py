"""The generator suites end to end in --quick mode, with the tiny bundle and a tiny random LM."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.__main__ import main


def test_classify_vs_generate_then_tradeoff(tiny_bundle: Path, tiny_lm: Path, tmp_path: Path):
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    (bundles / "atis").symlink_to(tiny_bundle)
    common = ["--quick", "--out-dir", str(tmp_path), "--bundles", str(bundles)]
    common += ["--lm", str(tiny_lm), "--datasets", "atis"]

    assert main(["classify-vs-generate", *common, "--variants", "few_shot", "scorer"]) == 0
    report = json.loads((tmp_path / "classify_vs_generate.json").read_text())
    atis = report["atis"]
    assert atis["sample_size"] == 3 and atis["encoder_full"]["n"] == 20
    for system in ("encoder", "few_shot", "scorer"):
        assert atis[system]["n"] == 3 and atis[system]["p50_ms"] > 0
    assert atis["scorer"]["valid_rate"] == 100.0  # a scorer always names a known intent
    cached = list((tmp_path / "generator-cache").glob("*.jsonl"))
    assert len(cached) == 2

    assert main(["tradeoff", *common, "--variants", "scorer"]) == 0
    tradeoff = json.loads((tmp_path / "tradeoff.json").read_text())["atis"]
    assert set(tradeoff) >= {"encoder_only", "generator_only", "routed", "chosen"}
    dev = tradeoff["variants"]["scorer"]["dev"]
    assert dev[0]["threshold"] == 0.0 and dev[0]["fallback_rate"] == 0.0
    assert [p["fallback_rate"] for p in dev] == sorted(p["fallback_rate"] for p in dev)
    assert max(p["fallback_rate"] for p in dev) == 15.0  # 3 of 20 answered
    chosen = tradeoff["chosen"]
    assert chosen["dev"]["sentence_acc"] >= tradeoff["encoder_only"]["dev"]["sentence_acc"]
    for name in ("tradeoff.csv", "tradeoff.png", "classify_vs_generate.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_contention_quick(tiny_bundle: Path, tiny_lm: Path, tmp_path: Path):
    args = ["contention", "--quick", "--out-dir", str(tmp_path), "--bundle", str(tiny_bundle)]
    assert main([*args, "--lm", str(tiny_lm)]) == 0
    rows = json.loads((tmp_path / "contention.json").read_text())["rows"]
    assert [(r["concurrency"], r["generator_in_flight"]) for r in rows] == [
        (1, False),
        (1, True),
        (4, False),
        (4, True),
    ]
    assert all(r["encoder_requests"] > 0 for r in rows)
    assert rows[1]["generator_calls"] > 0 and rows[0]["generator_calls"] == 0
    assert all(r["generator_loading"] == 0 for r in rows)  # measured once it had loaded
