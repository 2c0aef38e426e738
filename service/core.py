"""The transport-neutral core: validation, batching, routing decision, answers as domain types.

The gRPC servicer only converts between protobuf and these types.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from enum import Enum

from service import metrics
from service.batching import BatchQueue, Encoded
from service.errors import InvalidArgument, Unavailable
from service.generators.factory import build_backend
from service.retrieval import load_index
from service.router import Routed, Router
from service.runtime import Engine
from service.settings import Settings

log = logging.getLogger(__name__)


class Policy(Enum):
    DEFAULT = "default"
    ENCODER_ONLY = "encoder_only"
    GENERATOR_ONLY = "generator_only"


class Source(Enum):
    ENCODER = "encoder"
    GENERATOR = "generator"


@dataclass(frozen=True)
class ParseInput:
    text: str
    request_id: str = ""
    top_k: int = 0  # 0: server default
    policy: Policy = Policy.DEFAULT
    threshold: float | None = None


@dataclass(frozen=True)
class ParseResult:
    request_id: str
    encoded: Encoded
    routed: Routed
    top_k: int

    @property
    def source(self) -> Source:
        return Source.GENERATOR if self.routed.from_generator else Source.ENCODER


class NluCore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine | None = None
        self.batcher: BatchQueue | None = None
        self.draining = False
        self.router: Router | None = None
        self.model_version = ""
        self.bundle_sha256 = ""

    @property
    def ready(self) -> bool:
        return self.batcher is not None and not self.draining

    async def load(self) -> None:
        """Verify the bundle, open the session and warm it up (off the event loop)."""
        s = self.settings
        self.engine = await asyncio.to_thread(
            Engine,
            s.bundle,
            s.variant,
            s.provider,
            s.intra_op_threads,
            s.inter_op_threads,
            "all",
            False,
            s.ort_allow_spinning,
        )
        await asyncio.to_thread(self.engine.warm_up, s.warmup_batches, s.max_batch_size)
        bundle = self.engine.bundle
        self.bundle_sha256 = bundle.config_sha256
        self.model_version = f"{bundle.config['dataset']}-{self.bundle_sha256[:12]}"
        metrics.MODEL_INFO.labels(
            self.model_version,
            bundle.config["encoder"],
            bundle.config["dataset"],
            s.variant,
            self.engine.providers[0],
        ).set(1)
        backend = build_backend(s)
        if backend is not None:
            await asyncio.to_thread(backend.load)
        shows_examples = backend is not None and s.generator_prompt == "few_shot"
        self.router = Router(
            backend,
            bundle.intents,
            bundle.slot_tags,
            s.generator_timeout_s,
            s.margin_threshold,
            s.tag_confidence_threshold,
            load_index(s.bundle) if shows_examples else None,
            s.retrieval_k,
            s.generator_mode,
            s.score_candidates,
            s.generator_prompt,
        )
        self.batcher = BatchQueue(
            self.engine, s.max_batch_size, s.max_queue_delay_ms / 1000, s.max_queue_size
        )
        self.batcher.start()
        log.info(
            "model loaded",
            extra={"model_version": self.model_version, "providers": self.engine.providers},
        )

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        if self.router is not None and self.router.backend is not None:
            await self.router.backend.close()

    def validate(self, request: ParseInput, position: str = "") -> None:
        where = f"{position}: " if position else ""
        if not request.text.strip():
            raise InvalidArgument(f"{where}text is empty or whitespace-only")
        if len(request.text) > self.settings.max_text_chars:
            raise InvalidArgument(
                f"{where}text has {len(request.text)} characters; the limit is "
                f"{self.settings.max_text_chars}"
            )
        if request.threshold is not None and not (
            math.isfinite(request.threshold) and 0.0 <= request.threshold <= 1.0
        ):
            raise InvalidArgument(
                f"{where}confidence_threshold {request.threshold} is outside [0, 1]"
            )

    def check_batch(self, count: int) -> None:
        if count == 0:
            raise InvalidArgument("requests is empty")
        if count > self.settings.max_batch_items:
            raise InvalidArgument(
                f"{count} requests in one batch; the limit is {self.settings.max_batch_items}"
            )

    async def parse(
        self, requests: list[ParseInput], timeout_s: float | None = None
    ) -> list[ParseResult]:
        """Answer every request (order kept); validation fails the call before anything runs."""
        if not self.ready or self.batcher is None:
            raise Unavailable("draining" if self.draining else "model is not loaded yet")
        for i, request in enumerate(requests):
            self.validate(request, f"request {i}" if len(requests) > 1 else "")
        top_ks = [r.top_k or self.settings.default_top_k for r in requests]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s if timeout_s is not None else None
        futures = self.batcher.submit([r.text for r in requests], max(top_ks), deadline)
        answers = await asyncio.gather(*futures, return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        encoded: list[Encoded] = answers  # type: ignore[assignment]
        routed = await asyncio.gather(
            *(
                self.route(request, enc, deadline)
                for request, enc in zip(requests, encoded, strict=True)
            )
        )
        results = []
        for request, enc, top_k, answer in zip(requests, encoded, top_ks, routed, strict=True):
            result = ParseResult(request.request_id, enc, answer, top_k)
            metrics.ROUTES.labels(result.source.value).inc()
            results.append(result)
        if log.isEnabledFor(logging.DEBUG):
            self.log_results(requests, results)
        return results

    async def route(self, request: ParseInput, enc: Encoded, deadline: float | None) -> Routed:
        """Encoder-only requests skip the router; the rest may go to the generator."""
        if request.policy is Policy.ENCODER_ONLY or self.router is None:
            return Routed.from_encoder(enc.frame)
        threshold = (
            request.threshold
            if request.threshold is not None
            else self.settings.confidence_threshold
        )
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        return await self.router.route(
            enc.frame, request.policy is Policy.GENERATOR_ONLY, threshold, remaining
        )

    def log_results(self, requests: list[ParseInput], results: list[ParseResult]) -> None:
        """Per-utterance access log (DEBUG); the text only when `log_text` allows it."""
        for request, result in zip(requests, results, strict=True):
            fields = {
                "request_id": result.request_id,
                "intent": result.routed.intent,
                "encoder_confidence": round(result.encoded.frame.confidence, 4),
                "fallback_reason": result.routed.fallback_reason,
                "source": result.source.value,
            }
            if self.settings.log_text:
                fields["text"] = request.text
            log.debug("parsed", extra=fields)

    def model_info(self) -> dict:
        if self.engine is None:
            raise Unavailable("model is not loaded yet")
        bundle = self.engine.bundle
        return {
            "model_version": self.model_version,
            "bundle_sha256": self.bundle_sha256,
            "encoder": bundle.config["encoder"],
            "dataset": bundle.config["dataset"],
            "intents": list(bundle.intents),
            "slot_tags": list(bundle.slot_tags),
            "max_seq_len": bundle.max_seq_len,
            "quantization": self.settings.variant,
            "execution_providers": list(self.engine.providers),
            "confidence_threshold": self.settings.confidence_threshold,
            "generator_backend": self.settings.generator_backend,
            "generator_model": self.settings.generator_model,
            "generator_mode": self.settings.generator_mode,
            "generator_prompt": self.settings.generator_prompt,
            "max_batch_size": self.settings.max_batch_size,
            "max_text_chars": self.settings.max_text_chars,
            "max_batch_items": self.settings.max_batch_items,
        }
