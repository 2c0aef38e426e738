"""The frontier suite end to end on the tiny model: its 1-layer variant trained and exported
from the served model's own settings, alone and distilled from the served model, every variant
measured in-process."""

from __future__ import annotations

import json

from benchmarks.__main__ import main


def test_quick_frontier(tiny_model, tiny_bundle, small_atis, tmp_path):
    args = ["frontier", "--quick", "--out-dir", str(tmp_path), "--data", str(small_atis)]
    args += ["--model", str(tiny_model), "--bundle", str(tiny_bundle), "--layers", "2,1"]
    assert main([*args, "--threads", "1"]) == 0
    result = json.loads((tmp_path / "frontier.json").read_text())
    variants = {r["variant"] for r in result["rows"]}
    assert {"L2 fp32", "L1 fp32", "L1 distilled fp32"} <= variants, variants
    for name, teacher in (("atis-small-l1", None), ("atis-small-l1-kd", str(tiny_model))):
        trained = tmp_path / "artifacts/frontier" / name
        encoder = json.loads((trained / "encoder/config.json").read_text())
        assert encoder["num_hidden_layers"] == 1
        assert json.loads((trained / "config.json").read_text())["train"]["distill_from"] == teacher
    for row in result["rows"]:
        assert {"dataset", "variant", "intent_accuracy", "slot_f1", "sentence_accuracy",
                "p50_ms", "utt_per_s"} <= set(row)  # fmt: skip
        assert row["p50_ms"] > 0 and row["utt_per_s"] > 0
    assert result["meta"]["tokens_per_utterance"]["max"] <= result["meta"]["max_seq_len"]
    assert (tmp_path / "frontier.png").is_file()
