"""Generator backends by name. A new backend is one module with a `GeneratorBackend` subclass
(its `from_settings` reads what it needs from `GeneratorSettings`) plus its line in `BACKENDS`;
`GeneratorSettings.generator_backend` lists the same names (a test keeps them in step)."""

from __future__ import annotations

from service.breaker import CircuitBreaker
from service.generators.base import GeneratorBackend
from service.generators.guard import Guarded
from service.generators.local import LocalBackend
from service.generators.openai import OpenAIBackend
from service.settings import GeneratorSettings

BACKENDS: dict[str, type[GeneratorBackend]] = {
    "openai": OpenAIBackend,
    "local": LocalBackend,
}
NO_BACKEND = "none"


def build_backend(settings: GeneratorSettings) -> GeneratorBackend | None:
    """The named backend behind a circuit breaker, or None when routing has no generator."""
    if settings.generator_backend == NO_BACKEND:
        return None
    backend = BACKENDS[settings.generator_backend].from_settings(settings)
    return Guarded(backend, CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s))
