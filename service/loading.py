"""Wiring: build a serving core from the settings (verify and open the bundle, warm it up, start
the batching queue, put the generator behind the router). Runs the slow parts off the loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from service import metrics
from service.batching import BatchQueue
from service.contract.retrieval import load_index
from service.core import CoreOptions, NluCore
from service.extension_watch import load_extensions, watch_extensions
from service.generators.base import GeneratorBackend
from service.generators.registry import build_backend
from service.router import Router
from service.runtime import Engine
from service.settings import Settings

log = logging.getLogger(__name__)


async def load_generator(backend: GeneratorBackend) -> None:
    """Load the generator while the encoder already serves (a CPU SmolLM2 takes ~40 s). In a
    daemon thread, so a shutdown during the load does not wait for it. A failure is logged and
    leaves the generator not ready: routed requests keep getting the encoder's answer."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def work() -> None:
        try:
            backend.load()
        except Exception as e:
            loop.call_soon_threadsafe(done.set_exception, e)
        else:
            loop.call_soon_threadsafe(done.set_result, None)

    started = time.monotonic()
    threading.Thread(target=work, name="generator-load", daemon=True).start()
    try:
        await done
    except Exception:
        log.exception("the generator failed to load; routed requests get the encoder's answer")
        return
    metrics.GENERATOR_READY.set(1)
    log.info(
        "generator ready",
        extra={"model": backend.model, "load_s": round(time.monotonic() - started, 1)},
    )


def build_router(engine: Engine, settings: Settings, backend: GeneratorBackend | None) -> Router:
    """The router the server puts behind `engine` (benchmarks build theirs here too): the
    retrieval index when a prompt shows examples, the engine's open-world policy."""
    confirm = (
        backend is not None
        and settings.open_world.extension_intents_file is not None
        and settings.open_world.extension_generator_confirms
    )
    shows_examples = backend is not None and settings.routing.generator_prompt == "few_shot"
    return Router(
        backend=backend,
        labels=engine.bundle.labels,
        routing=settings.routing,
        index=load_index(engine.bundle.path) if shows_examples or confirm else None,
        open_world=engine.open_world,
        confirm_extensions=confirm,
    )


async def load_core(settings: Settings) -> NluCore:
    bundle_dir = settings.server.bundle
    engine = await asyncio.to_thread(
        Engine,
        bundle_dir,
        settings=settings.engine,
        open_world=settings.open_world,
        warmup=False,
    )
    await asyncio.to_thread(
        engine.warm_up, settings.engine.warmup_batches, settings.batching.max_batch_size
    )
    config = engine.bundle.config
    metrics.MODEL_INFO.labels(
        engine.bundle.model_version,
        config.encoder,
        config.dataset,
        engine.variant,
        engine.providers[0],
    ).set(1)
    backend = build_backend(settings.generator)
    if backend is not None:
        metrics.GENERATOR_READY.set(0)  # loaded after the encoder serves: load_generator
    router = build_router(engine, settings, backend)
    extension_file = settings.open_world.extension_intents_file
    watcher = None
    if extension_file is not None:
        seen = await asyncio.to_thread(load_extensions, engine, extension_file)
        watcher = asyncio.get_running_loop().create_task(
            watch_extensions(engine, extension_file, settings.open_world.extension_poll_s, seen),
            name="extension-watch",
        )
    batcher = BatchQueue(pipeline=engine, batching=settings.batching)
    batcher.start()
    log.info(
        "model loaded",
        extra={
            "model_version": engine.bundle.model_version,
            "providers": engine.providers,
            "intra_op_threads": engine.intra_op_threads,
            "instances": engine.instances,
            "solo_session": engine.solo is not None,
            "spinning": engine.spinning,
        },
    )
    return NluCore(
        engine=engine,
        batcher=batcher,
        router=router,
        options=CoreOptions.of(settings),
        watcher=watcher,
    )
