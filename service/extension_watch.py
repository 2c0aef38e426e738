"""Keep the engine's extension intents in step with their file, without a restart.

The file is read again every `extension_poll_s`, through its path, so a Kubernetes ConfigMap
update (the mounted directory's `..data` symlink swapped to a new folder) is seen like an edit in
place. A changed file is parsed and embedded off the event loop, then swapped in as one object:
a batch already decoding keeps the set it started with. A broken file is refused with its
file:line message, counted, and the previous set stays live; it is tried again once it changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

from service import metrics
from service.extensions import ExtensionError
from service.runtime import Engine

log = logging.getLogger(__name__)


def load_extensions(engine: Engine, path: Path) -> str:
    """Read, check, embed and swap in `path` now; the sha256 of what went live. Raises
    ExtensionError (or OSError) and leaves the live set as it was."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ExtensionError(path, None, f"not UTF-8 text ({e.reason})") from None
    extensions = engine.build_extensions(path, text)
    engine.open_world.extensions = extensions
    metrics.EXTENSION_INTENTS.set(len(extensions.intents))
    metrics.EXTENSION_RELOADS.labels("ok").inc()
    log.info(
        "extension intents live",
        extra={
            "file": str(path),
            "sha256": extensions.sha256[:12],
            "intents": [i.name for i in extensions.intents],
        },
    )
    return extensions.sha256


async def watch_extensions(engine: Engine, path: Path, poll_s: float, seen: str) -> None:
    """Poll `path`; reload when its bytes change. Runs until cancelled."""
    while True:
        await asyncio.sleep(poll_s)
        try:
            digest = hashlib.sha256(await asyncio.to_thread(path.read_bytes)).hexdigest()
        except OSError as e:
            if seen != "missing":
                log.error(
                    "extension file unreadable; keeping the live set", extra={"error": str(e)}
                )
                metrics.EXTENSION_RELOADS.labels("error").inc()
                seen = "missing"
            continue
        if digest == seen:
            continue
        try:
            seen = await asyncio.to_thread(load_extensions, engine, path)
        except (ExtensionError, OSError) as e:
            seen = digest  # refused: try again when it changes
            metrics.EXTENSION_RELOADS.labels("error").inc()
            log.error("extension file refused; keeping the live set", extra={"error": str(e)})
