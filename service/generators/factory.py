"""The generator backend named by the settings (None when routing has no generator)."""

from __future__ import annotations

from service.breaker import CircuitBreaker
from service.generators.base import GeneratorBackend
from service.generators.local import LocalBackend
from service.generators.openai import OpenAIBackend
from service.settings import Settings


def build_backend(settings: Settings) -> GeneratorBackend | None:
    if settings.generator_backend == "openai":
        key = settings.generator_api_key
        return OpenAIBackend(
            settings.generator_base_url,
            settings.generator_model,
            key.get_secret_value() if key else None,
            settings.generator_max_retries,
            settings.generator_max_tokens,
            CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s),
            settings.generator_max_concurrency,
        )
    if settings.generator_backend == "local":
        return LocalBackend(
            settings.generator_model,
            settings.generator_gguf_file or None,
            settings.generator_threads,
            settings.generator_max_tokens,
        )
    return None
