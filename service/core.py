"""The transport-neutral core: parse requests with a loaded model, answers as domain types.

Validate every request, batch the utterances through the encoder, route each frame. The gRPC
servicer only converts between protobuf and these types; `service.loading` builds the core.
"""

from __future__ import annotations

import asyncio
import logging

from service import metrics, tracing
from service.batching import BatchQueue
from service.contract.types import Encoded, ParseInput, ParseResult, Policy, Routed
from service.router import Router
from service.runtime import Engine
from service.settings import Settings
from service.validation import check_request

log = logging.getLogger(__name__)


class NluCore:
    def __init__(
        self,
        *,
        engine: Engine,
        batcher: BatchQueue,
        router: Router,
        settings: Settings,
        watcher: asyncio.Task | None = None,
    ) -> None:
        self.engine = engine
        self.batcher = batcher
        self.router = router
        self.settings = settings
        self.watcher = watcher  # keeps the extension intents in step with their file

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
        await self.batcher.stop()
        if self.router.backend is not None:
            await self.router.backend.close()

    async def parse(
        self, requests: list[ParseInput], timeout_s: float | None = None
    ) -> list[ParseResult]:
        """Answer every request (order kept); validation fails the call before anything runs."""
        for i, request in enumerate(requests):
            check_request(request, self.settings.limits, i if len(requests) > 1 else None)
        top_ks = [r.top_k or self.settings.limits.default_top_k for r in requests]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s if timeout_s is not None else None
        futures = self.batcher.submit([r.text for r in requests], deadline)
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
            if answer.out_of_scope:
                metrics.OUT_OF_SCOPE.inc()
            if answer.extension:
                metrics.EXTENSION_ANSWERS.inc()
            results.append(result)
        if log.isEnabledFor(logging.DEBUG):
            self.log_results(requests, results)
        return results

    async def route(self, request: ParseInput, enc: Encoded, deadline: float | None) -> Routed:
        """Encoder-only requests skip the router; the rest may go to the generator."""
        if request.policy is Policy.ENCODER_ONLY:
            return Routed.from_encoder(enc.frame)
        threshold = (
            request.threshold
            if request.threshold is not None
            else self.settings.routing.confidence_threshold
        )
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        with tracing.span("route") as span:
            routed = await self.router.route(
                enc.frame,
                force=request.policy is Policy.GENERATOR_ONLY,
                threshold=threshold,
                remaining_s=remaining,
            )
            if span is not None:
                span.set_attribute("nlu.intent", routed.intent)
                span.set_attribute("nlu.fallback_reason", routed.fallback_reason)
            return routed

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
            if self.settings.security.log_text:
                fields["text"] = request.text
            log.debug("parsed", extra=fields)
