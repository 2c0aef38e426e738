"""Structured logs: one JSON object per line, extra fields included."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry |= {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# Libraries that write to stderr in their own format unless told not to: the progress bars of
# huggingface_hub and of transformers (which reads huggingface_hub's switch when imported: the
# GGUF conversion's "Converting and de-quantizing GGUF tensors"). gRPC core's lines are
# silenced in service/__init__.py (grpc reads its switch at import). Defaults only: a variable
# set by the caller wins.
QUIET_LIBRARIES = {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def configure(level: str) -> None:
    """Every log line a JSON object: the process's own records, Python warnings, and the
    libraries that log through Python logging (transformers once `route_library_logs` ran);
    the libraries that would print their own lines are silenced (QUIET_LIBRARIES)."""
    for name, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(name, value)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)


def route_library_logs() -> None:
    """transformers prints with a handler of its own on a logger that does not propagate: send
    its records (warnings and worse) to the JSON handler instead. Call after importing it."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_warning()
    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
