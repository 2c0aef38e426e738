"""What the server is serving, as GetModelInfo reports it."""

from __future__ import annotations

from dataclasses import dataclass

from service.core import NluCore


@dataclass(frozen=True)
class RoutingDescription:
    generator_enabled: bool
    generator_backend: str
    generator_model: str
    confidence_threshold: float
    generator_mode: str
    generator_prompt: str
    generator_ready: bool


@dataclass(frozen=True)
class OutOfScopeDescription:
    method: str
    threshold: float | None
    intent: str
    trained_label: str
    chosen_by: str
    false_rejection_budget: float | None  # % of dev in-scope utterances the threshold flags


@dataclass(frozen=True)
class ExtensionDescription:
    name: str
    description: str
    examples: int


@dataclass(frozen=True)
class ModelDescription:
    model_version: str
    bundle_sha256: str
    encoder: str
    dataset: str
    intents: list[str]
    slot_tags: list[str]
    max_seq_len: int
    quantization: str
    execution_providers: list[str]
    routing: RoutingDescription
    max_batch_size: int
    max_text_chars: int
    max_batch_items: int
    out_of_scope: OutOfScopeDescription
    extension_intents: list[ExtensionDescription]
    extension_similarity_threshold: float | None


def describe(core: NluCore) -> ModelDescription:
    bundle, options = core.engine.bundle, core.options
    generator, backend = options.generator, core.router.backend
    extensions = core.engine.open_world.extensions
    return ModelDescription(
        model_version=bundle.model_version,
        bundle_sha256=bundle.config_sha256,
        encoder=bundle.config.encoder,
        dataset=bundle.config.dataset,
        intents=list(core.engine.open_world.answer_names),
        slot_tags=list(bundle.labels.slot_tags),
        max_seq_len=bundle.config.max_seq_len,
        quantization=core.engine.variant,
        execution_providers=list(core.engine.providers),
        routing=RoutingDescription(
            generator_enabled=generator.generator_backend != "none",
            generator_backend=generator.generator_backend,
            generator_model=backend.model if backend is not None else generator.generator_model,
            confidence_threshold=options.routing.confidence_threshold,
            generator_mode=options.routing.generator_mode,
            generator_prompt=options.routing.generator_prompt,
            generator_ready=backend is not None and backend.ready,
        ),
        max_batch_size=core.batcher.max_batch_size,
        max_text_chars=options.limits.max_text_chars,
        max_batch_items=options.limits.max_batch_items,
        out_of_scope=out_of_scope(core),
        extension_intents=[
            ExtensionDescription(i.name, i.description, len(i.examples))
            for i in (extensions.intents if extensions is not None else ())
        ],
        extension_similarity_threshold=core.engine.open_world.extension_threshold
        if extensions is not None
        else None,
    )


def out_of_scope(core: NluCore) -> OutOfScopeDescription:
    world = core.engine.open_world
    record = world.record
    return OutOfScopeDescription(
        method=world.detector.method,
        threshold=world.detector.threshold,
        intent=world.oos_intent,
        trained_label=world.trained_label or "",
        chosen_by=world.description(),
        false_rejection_budget=record.in_scope_budget
        if record is not None and world.detector.threshold is not None
        else None,
    )
