"""Shared fixtures: a tiny BERT encoder and a few hundred real ATIS examples, so tests stay fast."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# No hub: models come from packages or from the tests themselves. No telemetry or update checks,
# and caches in a temporary folder, not ~/.cache (subprocesses such as `transformers serve`
# inherit this). Set before anything imports huggingface_hub, which reads them at import.
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "DO_NOT_TRACK": "1",
    "HF_HOME": str(Path(tempfile.gettempdir()) / "nlu-tests-hf-home"),
}
os.environ.update(OFFLINE)

SHARED_ATIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "atis"
SPLIT_SIZES = {"train": 300, "dev": 60, "test": 60}
SHARED_CLINC = SHARED_ATIS.parent / "clinc150"
CLINC_INTENTS = ("translate", "balance", "weather", "alarm", "timer", "recipe")
CLINC_SIZES = {"train": (20, 20), "dev": (6, 20), "test": (6, 20)}  # per intent, oos


FOLDER_MARKERS = {"e2e": "e2e", "benchmarks": "e2e", "deploy": "deploy"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/e2e and tests/benchmarks are end to end, those under tests/deploy need
    the deploy tools (`make test-fast` skips all of them with the slow tests)."""
    root = Path(__file__).parent
    for item in items:
        marker = FOLDER_MARKERS.get(item.path.relative_to(root).parts[0])
        if marker:
            item.add_marker(getattr(pytest.mark, marker))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-golden",
        action="store_true",
        help="rewrite tests/e2e/golden/*.json from the current code (then review the diff)",
    )


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random 2-layer BERT: the bundles built from it, and the golden responses, are
    the same in every run."""
    from export.tiny_encoder import write_tiny_encoder

    return write_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def small_atis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first lines of each ATIS split, as a BIO folder dataset."""
    out = tmp_path_factory.mktemp("data") / "atis-small"
    for split, n in SPLIT_SIZES.items():
        (out / split).mkdir(parents=True)
        for name in ("seq.in", "seq.out", "label"):
            lines = (SHARED_ATIS / split / name).read_text().splitlines()[:n]
            (out / split / name).write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def tiny_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path, small_atis: Path
) -> Path:
    """A tiny joint model trained for two epochs on `small_atis`."""
    return train_tiny(small_atis, tmp_path_factory.mktemp("model"), tiny_encoder, epochs=2)


def train_tiny(data: Path, out: Path, encoder: Path, epochs: int) -> Path:
    """Train the tiny encoder on `data` (one thread, small batches, a high learning rate)."""
    from export.train import TrainConfig, train

    train(
        TrainConfig(
            data=str(data),
            out=str(out),
            encoder=str(encoder),
            epochs=epochs,
            batch_size=16,
            lr=1e-3,
            threads=1,
        )
    )
    return out


@pytest.fixture(scope="session")
def small_clinc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few CLINC150 intents plus out-of-scope (`oos`) utterances: an intent-only span JSONL
    dataset with a trained out-of-scope class."""
    import json

    out = tmp_path_factory.mktemp("data") / "clinc-small"
    out.mkdir()
    for split, (per_intent, oos) in CLINC_SIZES.items():
        rows = [json.loads(line) for line in (SHARED_CLINC / f"{split}.jsonl").open()]
        kept = [
            r for i in CLINC_INTENTS for r in [r for r in rows if r["intent"] == i][:per_intent]
        ]
        kept += [r for r in rows if r["intent"] == "oos"][:oos]
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    return out


@pytest.fixture(scope="session")
def tiny_clinc_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path, small_clinc: Path
) -> Path:
    """A tiny model trained on `small_clinc`."""
    return train_tiny(small_clinc, tmp_path_factory.mktemp("clinc-model"), tiny_encoder, epochs=10)


@pytest.fixture(scope="session")
def tiny_clinc_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_clinc_model: Path) -> Path:
    """The tiny CLINC model exported with the out-of-scope detector chosen on its dev split."""
    from export.onnx import build_bundle

    out = tmp_path_factory.mktemp("clinc-bundle")
    build_bundle(tiny_clinc_model, out, max_int8_drop=100.0)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny model exported to a bundle. int8 tolerance is loose: on 60 test utterances one
    flipped prediction is 1.7 points, and this fixture is about plumbing, not accuracy. The
    graphs are pinned: the golden responses must not depend on which graph a busy machine timed
    faster."""
    from export.onnx import build_bundle

    out = tmp_path_factory.mktemp("bundle")
    pinned = {"fp32": "optimized", "int8": "optimized.int8pc"}
    build_bundle(tiny_model, out, max_int8_drop=100.0, pinned=pinned)
    return out


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from service.contract.packaged import packaged_smollm2

    folder, gguf = packaged_smollm2()
    out = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out
