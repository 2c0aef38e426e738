"""The transport-neutral core: parse requests with a loaded model, answers as domain types.

Validate every request, batch the utterances through the encoder, route each frame. The gRPC
servicer only converts between protobuf and these types; `service.loading` builds the core.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from service import metrics, tracing
from service.batching import BatchQueue
from service.contract.types import Encoded, ParseInput, ParseResult, Policy, Routed
from service.router import Router
from service.runtime import Engine
from service.settings import GeneratorSettings, LimitsSettings, RoutingSettings, Settings
from service.validation import check_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoreOptions:
    """What the core reads of the settings, and nothing else: the request limits, the routing
    defaults, what answers and logs may carry, and the generator settings GetModelInfo reports.
    Transport knobs (ports, TLS, keepalive, drain, HTTP) stay with the front ends."""

    limits: LimitsSettings
    routing: RoutingSettings
    generator: GeneratorSettings
    log_text: bool
    return_generated_text: bool

    @classmethod
    def of(cls, settings: Settings) -> CoreOptions:
        return cls(
            limits=settings.limits,
            routing=settings.routing,
            generator=settings.generator,
            log_text=settings.security.log_text,
            return_generated_text=settings.observability.return_generated_text,
        )


class NluCore:
    def __init__(
        self,
        *,
        engine: Engine,
        batcher: BatchQueue,
        router: Router,
        options: CoreOptions,
        watcher: asyncio.Task | None = None,
    ) -> None:
        self.engine = engine
        self.batcher = batcher
        self.router = router
        self.options = options
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
            check_request(request, self.options.limits, i if len(requests) > 1 else None)
        top_ks = [r.top_k or self.options.limits.default_top_k for r in requests]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s if timeout_s is not None else None
        futures = self.batcher.submit([r.text for r in requests], deadline)
        if len(requests) == 1:  # Parse: awaited in place, no task per stage
            encoded = [await futures[0]]
            routed = [await self.route(requests[0], encoded[0], deadline)]
        else:
            answers = await asyncio.gather(*futures, return_exceptions=True)
            for answer in answers:
                if isinstance(answer, BaseException):
                    raise answer
            encoded = answers  # type: ignore[assignment]
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
            else self.options.routing.confidence_threshold
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
            if self.options.log_text:
                fields["text"] = request.text
            log.debug("parsed", extra=fields)
