"""Golden responses: the full answers of the tiny bundle for a fixed set of utterances, through
the real server, must not change unless a change means them to (then re-record with
`pytest tests/e2e/test_golden.py --record-golden` and say why in the commit)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client import NluClient, as_dict
from service.process import ServerProcess
from tests.conftest import SHARED_ATIS

GOLDEN = Path(__file__).parent / "golden" / "tiny_atis.json"
EXTRA_UTTERANCES = [
    "book a flight from boston to denver tomorrow",
    "what's the cheapest fare from PARIS to new york, please?",
    "show me the flights from pittsburgh to atlanta on monday morning",
    "  list   airlines   ",
    "i need a ticket " + "to denver " * 40,
]
TOP_K_ALL = 1000
VOLATILE = {"timings", "model_version"}  # wall-clock times; the bundle's hash holds created_at
VOLATILE_INFO = {"model_version", "bundle_sha256", "encoder"}  # encoder: a temporary folder


def utterances() -> list[str]:
    lines = (SHARED_ATIS / "test" / "seq.in").read_text().splitlines()
    return [line.strip() for line in lines[:25]] + EXTRA_UTTERANCES


def stable(response) -> dict:
    return {k: v for k, v in as_dict(response).items() if k not in VOLATILE}


def record(client) -> dict:
    texts = utterances()
    info = as_dict(client.info())
    return {
        "parse": [stable(client.parse(t, top_k=TOP_K_ALL)) for t in texts],
        "parse_batch": [stable(r) for r in client.parse_batch(texts, top_k=TOP_K_ALL)],
        "generator_only": stable(client.parse(texts[0], policy="generator")),
        "model_info": {k: v for k, v in info.items() if k not in VOLATILE_INFO},
    }


@pytest.fixture(scope="module")
def default_client(tiny_bundle: Path, tmp_path_factory) -> Iterator[NluClient]:
    """The server with its default settings (one ORT thread for repeatable timings only)."""
    log_path = tmp_path_factory.mktemp("golden") / "server.log"
    srv = ServerProcess.launch(tiny_bundle, log_path, "--intra-op-threads", "1")
    srv.wait_serving()
    client = NluClient(srv.target)
    yield client
    client.close()
    srv.stop()


def test_responses_match_the_golden_file(default_client, request):
    answers = record(default_client)
    if request.config.getoption("--record-golden"):
        GOLDEN.write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for key in golden:
        assert answers[key] == golden[key], key
