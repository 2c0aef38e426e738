"""The open-world policy of one served bundle: what an answer may be when the schema does not
cover every utterance. Built once from the bundle and the open-world settings; the engine, the
router, the generator prompts, the schema check and GetModelInfo all read it, so none of them
re-derives which names are in scope.

- Names: a bundle trained with an out-of-scope class (CLINC150's `oos`) never answers it as
  itself; its answers carry the `out_of_scope_intent` setting.
- The detector (`service.contract.oos`) and the operating point the exporter chose for it.
- Extension intents (`service.extensions`): the live set, swapped whole on reload, and the
  similarity rule that lets one answer.
- The scope band: which out-of-scope decisions a generator makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.contract.bundle import Bundle, OutOfScopeRecord
from service.contract.oos import (
    KNN_EMBEDDINGS,
    Detector,
    Reference,
    density_ranks,
    neighbour_similarity,
    read_reference,
)
from service.contract.types import ExtensionMatch
from service.extensions import ExtensionError, ExtensionSet, reserved_names
from service.settings import OpenWorldSettings

MAX_EXTENSION_CANDIDATES = 3  # the extension intents a generator is shown for one utterance


def load_detector(bundle: Bundle, enabled: bool, in_scope: np.ndarray) -> Detector:
    """The bundle's out-of-scope detector; without a threshold when detection is off or the
    bundle predates it (a trained out-of-scope class still counts)."""
    record = bundle.config.out_of_scope
    if record is None or not enabled or record.threshold is None:
        method = record.method if record is not None and record.method == "oos_class" else "off"
        return Detector(method, None, in_scope, Reference())
    return Detector(
        record.method, record.threshold, in_scope, read_reference(bundle.path, record.method)
    )


@dataclass(frozen=True)
class Decisions:
    """The open-world answer of each utterance of a batch, before slots."""

    out_of_scope: np.ndarray  # (B,) bool: no intent covers it (an extension's answer excluded)
    scores: np.ndarray  # (B,) the detector's in-scope scores
    best_in_scope: np.ndarray  # (B,) bundle index of the best in-scope intent
    from_extension: np.ndarray  # (B,) bool: answered by an extension intent
    candidates: list[tuple[ExtensionMatch, ...]]  # (B,) extension intents past the threshold


class OpenWorld:
    """Built by `of_bundle` for serving; directly (no detector) for a closed world."""

    def __init__(
        self,
        intents: Sequence[str],
        record: OutOfScopeRecord | None,
        settings: OpenWorldSettings,
        detector: Detector | None = None,
        bundle_path: Path | None = None,
    ) -> None:
        self.bundle_path = bundle_path
        self.record = record
        self.oos_intent = settings.out_of_scope_intent
        self.trained_label = record.trained_label if record is not None else None
        self.in_scope = np.array([i != self.trained_label for i in intents])  # (I,)
        self.answer_names = [
            i if kept else self.oos_intent for i, kept in zip(intents, self.in_scope, strict=True)
        ]
        """Bundle intent order, as answers carry them."""
        self.in_scope_intents = [i for i, kept in zip(intents, self.in_scope, strict=True) if kept]
        """The trained intents an answer may carry as themselves: what generator prompts list
        and the schema check accepts (never a trained out-of-scope class)."""
        self.reserved = reserved_names(intents, self.oos_intent)
        self.detector = detector or Detector("off", None, self.in_scope, Reference())
        self.detection_disabled = (
            record is not None and record.threshold is not None and self.detector.threshold is None
        )
        self.scope_band = settings.out_of_scope_route_band
        self.extension_threshold = self.default_extension_threshold(settings)
        rule = record.extension if record is not None else None
        self.extension_margin = (
            settings.extension_margin
            if settings.extension_margin is not None
            else (rule.margin if rule is not None else 0.0)
        )
        self.extension_density_matched = rule is not None and rule.compared_with == "density"
        self.extensions: ExtensionSet | None = None  # swapped whole by `service.extension_watch`
        # the extension rule's training-side similarity; the kNN detector already holds it
        self.knn_reference: Reference | None = (
            self.detector.reference if self.detector.method == "knn" else None
        )

    @classmethod
    def of_bundle(cls, bundle: Bundle, settings: OpenWorldSettings) -> OpenWorld:
        record = bundle.config.out_of_scope
        trained_label = bundle.config.trained_out_of_scope_label
        in_scope = np.array([i != trained_label for i in bundle.labels.intents])
        enabled = settings.out_of_scope_detection == "bundle"
        detector = load_detector(bundle, enabled, in_scope)
        return cls(bundle.labels.intents, record, settings, detector, bundle.path)

    def scope_threshold(self) -> float | None:
        """The threshold near which a generator decides scope (`out_of_scope_route_band`), or
        None when it decides none."""
        if self.scope_band > 0 and self.detector.threshold is not None:
            return self.detector.threshold
        return None

    def default_extension_threshold(self, settings: OpenWorldSettings) -> float | None:
        """The setting, else the rule the exporter chose without out-of-scope data, else (older
        bundles) the kNN detector's dev threshold."""
        if settings.extension_similarity_threshold is not None:
            return settings.extension_similarity_threshold
        if self.record is None:
            return None
        if self.record.extension is not None:
            return self.record.extension.threshold
        knn = self.record.dev.get("knn")
        return knn.threshold if knn is not None else None

    def decide(self, probabilities: np.ndarray, embeddings: np.ndarray) -> Decisions:
        """Calibrated probabilities (B, I) and embeddings (B, H) → each utterance's decision."""
        out_of_scope, scores = self.detector.decide(probabilities, embeddings)  # (B,), (B,)
        best_in_scope = np.where(self.in_scope, probabilities, -1.0).argmax(axis=1)  # (B,)
        extensions = self.extensions  # one set for the whole batch, whatever a reload does
        from_extension, similarity = self.match_extensions(extensions, best_in_scope, embeddings)
        candidates = [self.extension_candidates(extensions, row) for row in similarity]
        return Decisions(
            out_of_scope & ~from_extension, scores, best_in_scope, from_extension, candidates
        )

    def match_extensions(
        self, extensions: ExtensionSet | None, best_in_scope: np.ndarray, embedding: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B,) answered by the nearest extension intent: its nearest example is at least the
        threshold and, plus the margin, as close as the best in-scope intent's training
        utterances (the nearest one, or in bundles that chose a density-matched rule the one
        as near as the nearest of as many examples as the extension intent has); (B, E) each
        extension intent's similarity."""
        batch = len(embedding)
        if extensions is None or not extensions.intents:
            return np.zeros(batch, bool), np.zeros((batch, 0))
        similarity = extensions.similarity(embedding)  # (B, E)
        best, nearest = similarity.max(axis=1), similarity.argmax(axis=1)  # (B,), (B,)
        ranks = (
            density_ranks(self.knn_reference, best_in_scope, extensions.example_counts[nearest])
            if self.extension_density_matched
            else np.ones(batch, int)
        )  # (B,)
        trained = neighbour_similarity(self.knn_reference, best_in_scope, embedding, ranks)  # (B,)
        chosen = (best >= self.extension_threshold) & (best >= trained + self.extension_margin)
        return chosen, similarity

    def extension_candidates(
        self, extensions: ExtensionSet | None, similarity: np.ndarray
    ) -> tuple[ExtensionMatch, ...]:
        """The extension intents at least the threshold away from one utterance, best first,
        at most MAX_EXTENSION_CANDIDATES; `similarity` (E,)."""
        if extensions is None or not extensions.intents:
            return ()
        passing = np.flatnonzero(similarity >= self.extension_threshold)  # (P,)
        order = passing[np.argsort(-similarity[passing])][:MAX_EXTENSION_CANDIDATES]
        return tuple(ExtensionMatch(extensions.intents[e], float(similarity[e])) for e in order)

    def check_extensions_possible(self, source: Path) -> None:
        """ExtensionError when this bundle cannot match extension intents; loads the kNN
        reference data the rule compares against."""
        if self.extension_threshold is None:
            raise ExtensionError(
                source,
                None,
                "the bundle has no extension threshold: re-export it, or set "
                "extension_similarity_threshold",
            )
        if self.knn_reference is None:
            if self.bundle_path is None or not (self.bundle_path / KNN_EMBEDDINGS).is_file():
                raise ExtensionError(
                    source, None, f"{self.bundle_path} has no {KNN_EMBEDDINGS}: re-export it"
                )
            self.knn_reference = read_reference(self.bundle_path, "knn")

    def description(self) -> str:
        """How out-of-scope is decided, for GetModelInfo."""
        if self.record is None:
            return "bundle exported before out-of-scope detection"
        if self.detection_disabled:
            return "off by the out_of_scope_detection setting"
        return self.record.chosen_by
