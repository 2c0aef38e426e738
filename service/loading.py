"""Wiring: build a serving core from the settings (verify and open the bundle, warm it up, start
the batching queue, put the generator behind the router). Runs the slow parts off the loop."""

from __future__ import annotations

import asyncio
import logging

from service import metrics
from service.batching import BatchQueue
from service.contract.retrieval import load_index
from service.core import NluCore
from service.generators.registry import build_backend
from service.model_info import model_version
from service.router import Router
from service.runtime import Engine
from service.settings import Settings

log = logging.getLogger(__name__)


async def load_core(settings: Settings) -> NluCore:
    bundle_dir = settings.server.bundle
    engine = await asyncio.to_thread(Engine, bundle_dir, settings=settings.engine, warmup=False)
    await asyncio.to_thread(
        engine.warm_up, settings.engine.warmup_batches, settings.batching.max_batch_size
    )
    config = engine.bundle.config
    metrics.MODEL_INFO.labels(
        model_version(engine.bundle),
        config.encoder,
        config.dataset,
        settings.engine.variant,
        engine.providers[0],
    ).set(1)
    backend = build_backend(settings.generator)
    if backend is not None:
        await asyncio.to_thread(backend.load)
    shows_examples = backend is not None and settings.routing.generator_prompt == "few_shot"
    router = Router(
        backend=backend,
        labels=engine.bundle.labels,
        routing=settings.routing,
        index=load_index(bundle_dir) if shows_examples else None,
    )
    batcher = BatchQueue(pipeline=engine, batching=settings.batching)
    batcher.start()
    log.info(
        "model loaded",
        extra={
            "model_version": model_version(engine.bundle),
            "providers": engine.providers,
            "intra_op_threads": engine.intra_op_threads,
            "spinning": engine.spinning,
        },
    )
    return NluCore(engine=engine, batcher=batcher, router=router, settings=settings)
