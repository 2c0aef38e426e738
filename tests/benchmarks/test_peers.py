"""The peers suite end to end on the tiny bundle: this service, Triton Inference Server and
MLServer (their virtual environments come from `make peer-venvs`, which `make test` runs)."""

from __future__ import annotations

import json

from benchmarks.__main__ import main

ROW_FIELDS = {"server", "concurrency", "throughput_rps", "p50_ms", "p90_ms", "p99_ms", "errors",
              "server_cpu_s_per_1k", "load_cpu_share"}  # fmt: skip


def test_quick_peers(tiny_bundle, tmp_path):
    args = ["peers", "--quick", "--out-dir", str(tmp_path), "--bundle", str(tiny_bundle)]
    assert main(args) == 0
    result = json.loads((tmp_path / "peers.json").read_text())
    servers = {"nlu", "nlu, 2 workers", "triton", "mlserver"}
    assert {(r["server"], r["concurrency"]) for r in result["rows"]} == {
        (s, c) for s in servers for c in (1, 4)
    }
    admission = {"nlu, core shed", "nlu, 2 streams per connection"}
    assert {r["server"] for r in result["overload"]} == servers | admission
    for row in [*result["rows"], *result["overload"]]:
        assert set(row) >= ROW_FIELDS, row
        assert row["throughput_rps"] > 0 and row["server_cpu_s_per_1k"] > 0, row
    for row in result["rows"]:
        assert row["errors"] == 0, row
    meta = result["meta"]
    assert meta["answers_match_ours"] == {"triton": True, "mlserver": True, "nlu, 2 workers": True}
    assert set(meta["load_cpu_share"]) == {"closed_loop", "open_loop"}
    assert set(meta["versions"]) == {"triton", "mlserver"} and set(meta["batching"]) == {
        "triton", "mlserver"}  # fmt: skip
    assert set(result["targets"]) == {"nlu", "nlu, 2 workers"} | admission
    for name, ratios in result["targets"].items():
        assert "overload_answered_over_capacity" in ratios
        if name not in admission:
            assert set(ratios) >= {"throughput_c64_over_best_peer", "p50_c1_over_best_peer"}
    assert set(meta["admission"]) == admission
    assert (tmp_path / "peers.png").is_file()
