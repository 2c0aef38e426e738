"""Golden responses: the full answers of the tiny bundle for a fixed set of utterances, through
the real server, must not change unless a change means them to (then re-record with
`pytest tests/e2e/test_golden.py --record-golden` and say why in the commit).

What must not change is pinned exactly: labels, slot names, values and offsets, order, the field
set, strings, integers, flags. Floats are pinned to FLOAT_TOLERANCE: kernels differ between CPU
families in their last digits, and the tiny model is trained in the test session on whatever
CPU runs it. `pytest tests/e2e/test_golden.py -s` prints the largest float difference it saw.

One file per int8 kernel family (`int8_kernels`): the bundle serves its int8 graph, and ONNX
Runtime's u8s8 kernels on a CPU without VNNI (AVX2 only, such as AMD EPYC Zen 3) saturate their
int16 sums, so its answers are not those of a VNNI CPU (measured on the tiny bundle: intent
confidence 0.752 against 0.830 on the Intel Xeon recording, 0.832 from the fp32 graph). Record
a missing family's file on such a machine with --record-golden.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client import NluClient, as_dict
from service.process import ServerProcess
from tests.conftest import SHARED_ATIS

GOLDEN_DIR = Path(__file__).parent / "golden"
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
# Absolute, on probabilities, confidences and scores. Measured across x86 families: at most
# 1.8e-7 (AMD EPYC against the Intel Xeon recording); 1e-5 leaves a wide margin and still
# catches any change of model, calibration or decoding (those move the fourth decimal or more).
FLOAT_TOLERANCE = 1e-5


def int8_kernels() -> str:
    """The family of int8 matrix kernels ONNX Runtime picks on this CPU, by what they compute:
    `vnni` (AVX-512 VNNI, AVX-VNNI, AMX: exact u8s8 dot products) or `avx2` (AVX2 or AVX-512BW
    without VNNI: u8s8 pairs summed in saturating 16-bit, the same on both); else the machine."""
    flags = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.partition(":")[2].split())
                break
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "vnni"
    if "avx2" in flags:
        return "avx2"
    return platform.machine()


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


def float_drift(answer, golden, where: str = "") -> float:
    """The largest difference between the floats of two JSON trees that must otherwise be equal
    (same keys, same order, same strings, integers and flags); AssertionError naming the first
    place where they are not."""
    if isinstance(golden, float):
        assert isinstance(answer, float), f"{where}: {answer!r} is not a float like {golden!r}"
        return abs(answer - golden)
    if isinstance(golden, dict):
        assert isinstance(answer, dict) and list(answer) == list(golden), (
            f"{where}: fields {list(answer) if isinstance(answer, dict) else answer!r}, "
            f"golden {list(golden)}"
        )
        return max((float_drift(answer[k], golden[k], f"{where}.{k}") for k in golden), default=0.0)
    if isinstance(golden, list):
        assert isinstance(answer, list) and len(answer) == len(golden), (
            f"{where}: {len(answer) if isinstance(answer, list) else answer!r} items, "
            f"golden {len(golden)}"
        )
        pairs = zip(answer, golden, strict=True)
        return max(
            (float_drift(a, g, f"{where}[{i}]") for i, (a, g) in enumerate(pairs)), default=0.0
        )
    assert type(answer) is type(golden) and answer == golden, f"{where}: {answer!r} != {golden!r}"
    return 0.0


def test_float_drift_pins_everything_but_float_digits():
    golden = {"intent": "a", "slots": [{"start": 3, "confidence": 0.25}], "oos": False}
    assert float_drift(
        {"intent": "a", "slots": [{"start": 3, "confidence": 0.2500002}], "oos": False}, golden
    ) == pytest.approx(2e-7)
    for changed, where in [
        ({"intent": "b", "slots": [{"start": 3, "confidence": 0.25}], "oos": False}, ".intent"),
        (
            {"intent": "a", "slots": [{"start": 4, "confidence": 0.25}], "oos": False},
            ".slots[0].start",
        ),
        ({"intent": "a", "slots": [], "oos": False}, ".slots"),
        ({"intent": "a", "slots": [{"start": 3, "confidence": 0.25}], "oos": 0}, ".oos"),
        ({"slots": [{"start": 3, "confidence": 0.25}], "intent": "a", "oos": False}, ": fields"),
    ]:
        with pytest.raises(AssertionError, match=re.escape(where)):
            float_drift(changed, golden)


def test_responses_match_the_golden_file(default_client, request):
    answers = record(default_client)
    path = GOLDEN_DIR / f"tiny_atis.{int8_kernels()}.json"
    if request.config.getoption("--record-golden"):
        path.write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n")
    assert path.exists(), f"no golden file for int8 kernels {int8_kernels()}: record {path.name}"
    golden = json.loads(path.read_text())
    assert list(answers) == list(golden)
    drift = max(float_drift(answers[key], golden[key], key) for key in golden)
    print(f"\n{path.name}: largest float difference {drift:.3g} (tolerance {FLOAT_TOLERANCE:g})")
    assert drift <= FLOAT_TOLERANCE
