"""The load tool (`python -m benchmarks load`) against the real server: closed-loop levels and
an open-loop rate, utterances from a file, and what it says of a bad file."""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main
from service.process import ServerProcess


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    srv = ServerProcess.launch(tiny_bundle, tmp_path_factory.mktemp("load") / "log", http=True)
    srv.wait_serving()
    yield srv
    assert srv.stop() == 0


def test_levels_and_a_rate_from_a_texts_file(server, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("list airlines\n\nshow me flights from boston to denver\n")
    args = ["load", "--quick", "--out-dir", str(tmp_path), "--target", server.target]
    args += ["--texts", str(texts), "--concurrency", "1,4", "--rate", "40", "--workers", "1"]
    assert main([*args, "--server-pid", str(server.process.pid)]) == 0
    result = json.loads((tmp_path / "load.json").read_text())
    assert [r["concurrency"] for r in result["rows"]] == [1, 4]
    for row in [*result["rows"], *result["open_loop"]]:
        assert row["errors"] == 0 and row["throughput_rps"] > 0, row
        assert row["p50_ms"] <= row["p99_ms"] and row["server_cpu_s_per_1k"] > 0
        assert row["load_cpu_share"] > 0
    assert result["open_loop"][0]["rate_rps"] == 40.0
    assert result["meta"]["utterances"] == 2 and (tmp_path / "load.png").is_file()


def test_refusals_that_outnumber_answers_are_called_out(tiny_bundle, tmp_path):
    """8 callers that send again at once against a server that admits 1: most calls are
    refused, and the summary says why and what avoids it."""
    from benchmarks.load.suite import SUITE

    srv = ServerProcess.launch(tiny_bundle, tmp_path / "log", "--max-concurrent-rpcs", "1")
    srv.wait_serving()
    try:
        args = ["load", "--quick", "--out-dir", str(tmp_path), "--target", srv.target]
        assert main([*args, "--concurrency", "8"]) == 0
    finally:
        assert srv.stop() == 0
    result = json.loads((tmp_path / "load.json").read_text())
    (row,) = result["rows"]
    assert row["errors_by_code"]["RESOURCE_EXHAUSTED"] > row["requests"] - row["errors"] > 0
    assert "refused more calls than it answered at concurrency 8 (" in SUITE.summary(result)


def test_http_protocol(server, tmp_path):
    args = ["load", "--quick", "--out-dir", str(tmp_path), "--target", server.http_url]
    assert main([*args, "--protocol", "http", "--concurrency", "2"]) == 0
    (row,) = json.loads((tmp_path / "load.json").read_text())["rows"]
    assert row["errors"] == 0 and row["throughput_rps"] > 0


@pytest.mark.parametrize(
    ("content", "names"), [(b"\n\n", "no utterances"), (b"\xff\xfe", "cannot read")]
)
def test_a_bad_texts_file_is_named(server, tmp_path, content, names):
    texts = tmp_path / "texts.txt"
    texts.write_bytes(content)
    args = ["load", "--quick", "--out-dir", str(tmp_path), "--target", server.target]
    with pytest.raises(SystemExit, match=f"{texts}: {names}"):
        main([*args, "--texts", str(texts)])


def test_mtls_flags_go_together(tmp_path):
    args = ["load", "--quick", "--out-dir", str(tmp_path), "--target", "127.0.0.1:1"]
    with pytest.raises(SystemExit, match="--tls-cert and --tls-key go together"):
        main([*args, "--tls-ca", "ca.pem", "--tls-cert", "c.pem"])
