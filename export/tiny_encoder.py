"""A tiny randomly initialised BERT with the packaged MiniLM tokenizer: seconds to train, for
tests and the image smoke test (never for real answers).

    python -m export.tiny_encoder --out build/tiny-encoder
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from service.contract.packaged import default_encoder_path


def write_tiny_encoder(out: Path, seed: int = 0) -> Path:
    """2 layers, hidden 32; seeded, so bundles trained from it repeat exactly."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    shutil.copyfile(default_encoder_path() / "tokenizer.json", out / "tokenizer.json")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    write_tiny_encoder(p.parse_args(argv).out)


if __name__ == "__main__":
    main()
