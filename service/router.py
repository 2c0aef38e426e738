"""Confidence routing: ask the generator only when the encoder is unsure, and use its answer only
when it fits the schema. A generator problem never fails a request: the encoder answers, with
`fallback_reason` saying why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service import metrics, tracing
from service.contract.labels import LabelSet
from service.contract.prompt import (
    NONE,
    Candidate,
    answer_start,
    build_choice_messages,
    build_messages,
    build_plain_messages,
    build_scope_messages,
)
from service.contract.retrieval import IndexEntry, RetrievalIndex
from service.contract.types import Frame, Routed
from service.generators.base import GeneratorBackend, GeneratorError
from service.open_world import OpenWorld
from service.schema import GeneratedFrame, InvalidAnswer, validate, validate_choice
from service.settings import OpenWorldSettings, RoutingSettings

log = logging.getLogger(__name__)
RECENT_LATENCIES = 50
EXAMPLES_SHOWN = 3  # example utterances per candidate when the generator confirms an extension
Decision = Literal["extension", "scope"]


def margin(frame: Frame) -> float:
    """Probability gap between the encoder's two best intents."""
    top = np.partition(frame.probabilities, -2)[-2:] if len(frame.probabilities) > 1 else [0, 1]
    return float(top[1] - top[0])


@dataclass(frozen=True)
class ScopeRouting:
    """Which out-of-scope decisions the generator makes: those whose in-scope score lies within
    `band` of the detector's `threshold`. It picks among the encoder's top in-scope intents or
    "none" (then the answer is the router's `oos_intent`, out of scope)."""

    threshold: float
    band: float

    def near(self, frame: Frame) -> bool:
        return abs(frame.in_scope_score - self.threshold) <= self.band


class Router:
    """Routes one encoder frame: the encoder's answer, or the generator's when the encoder is
    unsure (or the caller forces it) and the answer fits the label schema. An out-of-scope or
    extension-intent frame keeps the encoder's answer unless the caller forces the generator, or
    a decision is the generator's: with `confirm_extensions`, a frame with extension candidates
    goes to it to choose among the encoder's top intents, those candidates and "none"; with
    `scope`, a frame near the out-of-scope threshold, to choose among the top intents and "none".

    `routing.generator_mode` generate: the LM writes the JSON frame; score: the LM picks one of
    the encoder's top `score_candidates` intents by log-likelihood (one forward pass) and the
    encoder's slots stay. `routing.generator_prompt` few_shot: schema + retrieved examples +
    candidates; plain: the utterance alone (the prompt `make train-generator` fine-tunes on)."""

    def __init__(
        self,
        *,
        backend: GeneratorBackend | None,
        labels: LabelSet,
        routing: RoutingSettings,
        index: RetrievalIndex | None = None,
        open_world: OpenWorld | None = None,
        confirm_extensions: bool = False,
    ) -> None:
        self.backend = backend
        self.labels = labels
        self.routing = routing
        self.index = index
        self.world = open_world or OpenWorld(labels.intents, None, OpenWorldSettings())
        threshold = self.world.scope_threshold()
        self.scope = (
            ScopeRouting(threshold, self.world.scope_band)
            if threshold is not None and backend is not None
            else None
        )
        self.confirm_extensions = confirm_extensions
        self.latencies: deque[float] = deque(maxlen=RECENT_LATENCIES)

    def unsure(self, frame: Frame, threshold: float) -> bool:
        """Any signal below its threshold: intent confidence, top-2 margin, weakest word tag."""
        return (
            frame.confidence < threshold
            or margin(frame) < self.routing.margin_threshold
            or frame.min_tag_confidence < self.routing.tag_confidence_threshold
        )

    def recent_p50_s(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0

    async def route(
        self, frame: Frame, *, force: bool, threshold: float, remaining_s: float | None
    ) -> Routed:
        """Encoder answer unless (forced or unsure) and the generator's answer fits the schema."""
        encoder = Routed.from_encoder(frame)
        decision = None if force else self.decision(frame)
        if (
            not force
            and decision is None
            and (frame.out_of_scope or frame.extension or not self.unsure(frame, threshold))
        ):
            return encoder
        if self.backend is None:
            return self.fallback(encoder, "generator_disabled")
        if not self.backend.ready:
            return self.fallback(encoder, "generator_loading")
        timeout_s = self.routing.generator_timeout_s
        budget = timeout_s if remaining_s is None else min(timeout_s, remaining_s)
        if remaining_s is not None and remaining_s < self.recent_p50_s():
            return self.fallback(encoder, "deadline")
        messages = self.decision_messages(frame, decision) if decision else self.messages(frame)
        started = time.perf_counter()
        try:
            with tracing.span("generate", **{"nlu.generator_mode": self.routing.generator_mode}):
                answer, generated = await self.ask(frame, decision, messages, budget)
        except GeneratorError as e:
            return self.fallback(encoder, e.reason, time.perf_counter() - started)
        except InvalidAnswer as e:  # a generated choice that is none of the options
            return self.fallback(encoder, e.reason, time.perf_counter() - started)
        except Exception:  # a generator bug must not fail the request either
            log.exception("generator backend failed")
            return self.fallback(encoder, "backend_error", time.perf_counter() - started)
        elapsed = time.perf_counter() - started
        self.latencies.append(elapsed)
        metrics.GENERATOR_DURATION.observe(elapsed)
        if decision and answer.intent == NONE:
            in_scope = max(
                (float(frame.probabilities[i]) for i in self.in_scope_indices()), default=0.0
            )
            return Routed(
                True,
                self.world.oos_intent,
                1.0 - in_scope,
                [],
                "",
                elapsed * 1000,
                generated,
                True,
            )
        extension = {m.intent.name: m for m in frame.extension_candidates}
        if decision == "extension" and answer.intent in extension:
            similarity = extension[answer.intent].similarity
            return Routed(
                True,
                answer.intent,
                similarity,
                frame.slots,
                "",
                elapsed * 1000,
                generated,
                extension=True,
            )
        if self.routing.generator_mode == "generate" and not decision:
            try:
                answer = validate(
                    generated, frame.text, self.world.in_scope_intents, self.labels.slot_types
                )
            except InvalidAnswer as e:
                return self.fallback(encoder, e.reason, elapsed, generated)
        confidence = float(frame.probabilities[self.labels.intents.index(answer.intent)])
        return Routed(True, answer.intent, confidence, answer.slots, "", elapsed * 1000, generated)

    def decision(self, frame: Frame) -> Decision | None:
        """Which decision, if any, is the generator's for this frame (whatever its confidence):
        extension candidates first (their choice includes "none"), then scope."""
        if self.confirm_extensions and frame.extension_candidates:
            return "extension"
        if self.scope is not None and not frame.extension and self.scope.near(frame):
            return "scope"
        return None

    def in_scope_indices(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.world.in_scope)]

    def candidates(self, frame: Frame) -> list[str]:
        """The encoder's top `score_candidates` in-scope intents, best first."""
        ranked = np.argsort(-frame.probabilities)
        in_scope = [self.labels.intents[i] for i in ranked if self.world.in_scope[i]]
        return in_scope[: self.routing.score_candidates]

    def options(self, frame: Frame, decision: Decision) -> list[str]:
        extension = [m.intent.name for m in frame.extension_candidates]
        return [*self.candidates(frame), *(extension if decision == "extension" else []), NONE]

    def decision_messages(self, frame: Frame, decision: Decision) -> list[dict[str, str]]:
        """plain prompt: the candidate names and the utterance (what `export.train_generator
        --task scope` trains on); few-shot: a scope decision shows the nearest training examples
        as solved turns, an extension decision each candidate's description and examples."""
        names = self.options(frame, decision)[:-1]  # every prompt offers "none" itself
        if self.routing.generator_prompt == "plain":
            return build_scope_messages(frame.text, names, [], self.world.trained_label)
        if decision == "scope":
            examples = self.nearest(frame, in_scope_only=False)  # out-of-scope ones as "none"
            return build_scope_messages(frame.text, names, examples, self.world.trained_label)
        trained = [
            Candidate(
                name,
                "",
                self.index.nearest_of(frame.embedding, name, EXAMPLES_SHOWN) if self.index else [],
            )
            for name in self.candidates(frame)
        ]
        added = [
            Candidate(m.intent.name, m.intent.description, list(m.intent.examples[:EXAMPLES_SHOWN]))
            for m in frame.extension_candidates
        ]
        return build_choice_messages(frame.text, trained + added)

    async def ask(
        self,
        frame: Frame,
        decision: Decision | None,
        messages: list[dict[str, str]],
        budget: float,
    ) -> tuple[GeneratedFrame | None, str]:
        """The generator's answer: a scope or extension decision, a scored intent, or (generate
        mode) the raw text, parsed by the caller."""
        if decision:
            return await self.pick_option(frame, decision, messages, budget)
        if self.routing.generator_mode == "score":
            return await self.pick_intent(frame, messages, budget)
        return None, await self.backend.generate(messages, budget)

    async def pick_option(
        self, frame: Frame, decision: Decision, messages: list[dict[str, str]], budget: float
    ) -> tuple[GeneratedFrame, str]:
        """The option (a candidate intent or "none") the LM finds most likely, by log-likelihood
        where the backend exposes it, else as it writes it (InvalidAnswer when it names none of
        them); the encoder's slots stay."""
        options = self.options(frame, decision)
        try:
            scores = await self.backend.score(messages, [answer_start(c) for c in options], budget)
        except GeneratorError as e:
            if e.reason != "unsupported":
                raise
            generated = await self.backend.generate(messages, budget)
            best = validate_choice(generated, options)
        else:
            best = options[int(np.argmax(scores))]
            generated = json.dumps({c: round(v, 3) for c, v in zip(options, scores, strict=True)})
        return GeneratedFrame(best, frame.slots if best != NONE else []), generated

    def messages(self, frame: Frame) -> list[dict[str, str]]:
        if self.routing.generator_prompt == "plain":
            return build_plain_messages(frame.text)
        intents = self.world.in_scope_intents
        likely = [c for c in frame.top_intents if c.label in intents]
        return build_messages(
            frame.text, intents, self.labels.slot_types, likely, self.nearest(frame)
        )

    def nearest(self, frame: Frame, in_scope_only: bool = True) -> list[IndexEntry]:
        """The `retrieval_k` training examples nearest the utterance (none without an index);
        with `in_scope_only`, none of the trained out-of-scope class."""
        if self.index is None:
            return []
        exclude = self.world.trained_label if in_scope_only else None
        return self.index.nearest(frame.embedding, self.routing.retrieval_k, exclude)

    async def pick_intent(
        self, frame: Frame, messages: list[dict[str, str]], budget: float
    ) -> tuple[GeneratedFrame, str]:
        """The encoder's top candidate intent the LM finds most likely, with the encoder's slots;
        the text is the scores as JSON (for debugging)."""
        candidates = self.candidates(frame)
        if len(candidates) == 1:
            return GeneratedFrame(candidates[0], frame.slots), "{}"
        scores = await self.backend.score(messages, [answer_start(c) for c in candidates], budget)
        best = candidates[int(np.argmax(scores))]
        text = json.dumps({c: round(v, 3) for c, v in zip(candidates, scores, strict=True)})
        return GeneratedFrame(best, frame.slots), text

    @staticmethod
    def fallback(
        encoder: Routed, reason: str, elapsed_s: float = 0.0, generated: str = ""
    ) -> Routed:
        metrics.GENERATOR_FAILURES.labels(reason).inc()
        return dataclasses.replace(
            encoder,
            fallback_reason=reason,
            generator_ms=elapsed_s * 1000,
            generated_text=generated,
        )
