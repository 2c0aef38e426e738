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
    (lengths,) = result["meta"]["datasets"].values()
    assert lengths["tokens_per_utterance"]["max"] <= lengths["max_seq_len"]
    assert (tmp_path / "frontier.png").is_file()


def test_the_frontier_of_several_datasets_reads_one_table_and_one_panel_row_each(tmp_path):
    from benchmarks.frontier import SUITE

    def row(data: str, variant: str, accuracy: float) -> dict:
        return {"dataset": data, "variant": variant, "precision": variant.split()[-1],
                "graph": "optimized", "intent_accuracy": 97.0, "slot_f1": 95.0,
                "sentence_accuracy": accuracy, "p50_ms": 5.0, "utt_per_s": 300.0}  # fmt: skip

    routed = dict(source="tradeoff.json", same_cpu=False, intent_accuracy=97.8, slot_f1=95.5)
    routed |= dict(sentence_accuracy=87.4, p50_ms=2.3, utt_per_s=415.0)
    lengths = {"tokens_per_utterance": {"mean": 12.6, "p99": 24, "max": 35}, "max_seq_len": 64}
    result = {
        "rows": [row("atis", "L6 int8", 87.9), row("snips", "L6 int8", 90.1)],
        "routed": {"atis": routed, "snips": None},
        "meta": {"throughput_batch": 32, "datasets": {"atis": lengths, "snips": lengths}},
    }
    table = SUITE.summary(result).splitlines()
    assert table[2].startswith("| atis | L6 int8 |") and table[4].startswith("| snips | L6 int8 |")
    assert table[3].endswith("| 87.4 | (other CPU) | (other CPU) |")  # its speed does not compare
    assert "snips: tokens per utterance mean 12.6" in table[-1]
    SUITE.plot(result, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 0
