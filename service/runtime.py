"""ONNX Runtime inference over a verified model bundle: texts in, frames out. No torch.

Tokenisation, word alignment and BIO decoding come from `service.contract.text`, the module
training uses.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from service.contract.bundle import TOKENIZER, Bundle, load_bundle
from service.contract.graph import OUTPUTS, onnx_feeds
from service.contract.oos import (
    KNN_EMBEDDINGS,
    Detector,
    Reference,
    in_scope_scores,
    read_reference,
)
from service.contract.text import (
    EncodedBatch,
    decode_bio,
    decode_word_tags,
    encode_texts,
    load_tokenizer,
    softmax,
    word_scores,
)
from service.contract.types import ExtensionMatch, Frame, IntentScore, RawOutputs
from service.cpus import cpu_quota, usable_cpus
from service.extensions import ExtensionError, ExtensionSet, parse_extensions
from service.settings import EngineSettings, OpenWorldSettings

log = logging.getLogger(__name__)

Provider = Literal["cpu", "cuda"]
GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
WARMUP_TEXT = "show me flights from boston to denver tomorrow morning"
MAX_EXTENSION_CANDIDATES = 3  # the extension intents a generator is shown for one utterance


@functools.cache
def preload_cuda() -> None:
    """onnxruntime-gpu[cuda,cudnn] (the GPU image) brings CUDA and cuDNN as pip packages, which
    ONNX Runtime finds once preloaded (ORT 1.21 and later); once per process, not per session."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        preload()


def select_providers(provider: Provider) -> list[str]:
    """CUDA when asked for and available (onnxruntime-gpu + a GPU), else CPU with a warning."""
    if provider == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            preload_cuda()
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning("CUDA execution provider requested but not available; falling back to CPU")
    return ["CPUExecutionProvider"]


def load_detector(bundle: Bundle, enabled: bool) -> Detector:
    """The bundle's out-of-scope detector; without a threshold when detection is off or the
    bundle predates it (a trained out-of-scope class still counts)."""
    record = bundle.config.out_of_scope
    intents = bundle.labels.intents
    trained_label = record.trained_label if record is not None else None
    in_scope = np.array([i != trained_label for i in intents])
    if record is None or not enabled or record.threshold is None:
        method = record.method if record is not None and record.method == "oos_class" else "off"
        return Detector(method, None, in_scope, Reference())
    return Detector(
        record.method, record.threshold, in_scope, read_reference(bundle.path, record.method)
    )


class Engine:
    """ONNX Runtime over one bundle variant: fp32 runs whole batches on one session; int8 runs
    each utterance alone (`per_row`) on `instances` sessions side by side."""

    def __init__(
        self,
        bundle_dir: str | Path,
        *,
        settings: EngineSettings,
        open_world: OpenWorldSettings | None = None,
        graph_optimization: str = "all",
        warmup: bool = True,
    ) -> None:
        bundle_dir = Path(bundle_dir)
        self.bundle: Bundle = load_bundle(bundle_dir)
        self.settings = settings
        open_world = open_world or OpenWorldSettings()
        self.detector = load_detector(self.bundle, open_world.out_of_scope_detection == "bundle")
        self.oos_intent = open_world.out_of_scope_intent
        record = self.bundle.config.out_of_scope
        # the bundle's trained out-of-scope class (CLINC150's `oos`), never answered as itself
        self.trained_label = record.trained_label if record is not None else None
        knn = record.dev.get("knn") if record is not None else None
        self.extension_threshold = (
            open_world.extension_similarity_threshold
            if open_world.extension_similarity_threshold is not None
            else (knn.threshold if knn is not None else None)
        )
        self.extension_margin = open_world.extension_margin
        self.extensions: ExtensionSet | None = None  # swapped whole by `service.extension_watch`
        # the extension rule's training-side similarity; the kNN detector already holds it
        self.knn_reference: Reference | None = (
            self.detector.reference if self.detector.method == "knn" else None
        )
        self.intent_names = [  # as answered: a trained out-of-scope class under the set name
            i if kept else self.oos_intent
            for i, kept in zip(self.bundle.labels.intents, self.detector.in_scope, strict=True)
        ]
        self.variant = settings.variant or self.bundle.config.served_variant
        self.tokenizer = load_tokenizer(bundle_dir / TOKENIZER, self.bundle.config.max_seq_len)
        self.intra_op_threads = settings.intra_op_threads or usable_cpus()
        spinning = settings.ort_allow_spinning
        self.spinning = cpu_quota() is None if spinning is None else spinning
        # The int8 graphs are dynamically quantised: activation scales come from the whole
        # input tensor, so in a batch one user's answer would depend on the other requests (and
        # on padding). Run alone, every answer is the same in any batch.
        self.per_row = self.variant == "int8"
        # Per-row mode runs utterances side by side on `instances` sessions (as Triton's
        # instance groups do), sharing the intra-op threads; batched mode uses one session.
        self.instances = (settings.instances or self.intra_op_threads) if self.per_row else 1
        threads = max(1, self.intra_op_threads // self.instances)
        self.sessions = [
            self.open_session(threads, graph_optimization) for _ in range(self.instances)
        ]
        self.providers = self.sessions[0].get_providers()
        self.pool = (
            ThreadPoolExecutor(self.instances, thread_name_prefix="onnx-instance")
            if self.per_row
            else None
        )
        if warmup:
            self.warm_up()

    def open_session(self, threads: int, graph_optimization: str) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = self.settings.inter_op_threads
        options.graph_optimization_level = GRAPH_OPTIMIZATION[graph_optimization]
        # Idle ORT threads spin-wait by default: lower latency, but they burn the cores that
        # anything else in the process (a gRPC loop, another runtime) needs.
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.spinning else "0"
        )
        return ort.InferenceSession(
            str(self.bundle.model_file(self.variant)),
            options,
            providers=select_providers(self.settings.provider),
        )

    def warm_up(self, batches: int = 1, batch_size: int = 2) -> None:
        """Run a few full batches so the first real request does not pay for lazy set-up."""
        for _ in range(batches):
            self.parse([WARMUP_TEXT] * batch_size)

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        return encode_texts(self.tokenizer, texts)

    def infer(self, enc: EncodedBatch) -> RawOutputs:
        if self.per_row:
            return self.infer_rows(enc)
        intent, slots, embedding = self.sessions[0].run(
            list(OUTPUTS), onnx_feeds(enc, self.bundle.config.inputs)
        )
        return RawOutputs(intent, slots, embedding)

    def infer_rows(self, enc: EncodedBatch) -> RawOutputs:
        """One session call per utterance on its unpadded tokens, spread over the instances
        (ONNX Runtime releases the GIL), assembled as one batch."""
        feeds = onnx_feeds(enc, self.bundle.config.inputs)  # each (B, T)
        lengths = enc.attention_mask.sum(axis=1)  # (B,)

        def row(b: int) -> list[np.ndarray]:
            session = self.sessions[b % self.instances]
            n = lengths[b]
            return session.run(list(OUTPUTS), {k: v[b : b + 1, :n] for k, v in feeds.items()})

        rows = list(self.pool.map(row, range(len(lengths))))
        batch, seq_len = enc.input_ids.shape
        slots = np.zeros((batch, seq_len, rows[0][1].shape[-1]), dtype=rows[0][1].dtype)
        for b, (_, row_slots, _) in enumerate(rows):
            slots[b, : row_slots.shape[1]] = row_slots[0]  # (n_b, S) into (T, S)
        intent = np.concatenate([r[0] for r in rows])  # (B, I)
        embedding = np.concatenate([r[2] for r in rows])  # (B, H)
        return RawOutputs(intent, slots, embedding)

    def decode(
        self, texts: Sequence[str], enc: EncodedBatch, raw: RawOutputs, top_k: int = 3
    ) -> list[Frame]:
        """Calibrated intent probabilities, top-k, and BIO slots with character offsets."""
        labels, temperature = self.bundle.labels, self.bundle.config.temperature
        probs = softmax(raw.intent_logits.astype(np.float64), temperature)  # (B, I)
        out_of_scope, scores = self.detector.decide(probs, raw.embedding)  # (B,), (B,)
        best_in_scope = probs[:, self.detector.in_scope].max(axis=1)  # (B,)
        extensions = self.extensions  # one set for the whole batch, whatever a reload does
        from_extension, similarity = self.match_extensions(extensions, probs, raw.embedding, scores)
        frames = []
        for b, text in enumerate(texts):
            order = np.argsort(-probs[b])[: max(1, top_k)]
            top = [IntentScore(self.intent_names[i], float(probs[b, i])) for i in order]
            intent, confidence = top[0].label, top[0].probability
            candidates = self.extension_candidates(extensions, similarity[b])
            if from_extension[b]:
                intent, confidence = candidates[0].intent.name, candidates[0].similarity
            elif out_of_scope[b]:
                intent, confidence = self.oos_intent, 1.0 - float(best_in_scope[b])
            words = enc.words[b]
            logits = word_scores(enc.word_index[b], raw.slot_logits[b], len(words))  # (W, S)
            tags, confidences = decode_word_tags(logits, labels.slot_tags, self.bundle.crf)
            frames.append(
                Frame(
                    text=text,
                    intent=intent,
                    confidence=confidence,
                    top_intents=top,
                    probabilities=probs[b],
                    slots=decode_bio(text, words, tags, confidences),
                    word_tags=tags,
                    min_tag_confidence=min(confidences, default=1.0),
                    embedding=raw.embedding[b],
                    truncated_words=enc.truncated_words[b],
                    out_of_scope=bool(out_of_scope[b] and not from_extension[b]),
                    in_scope_score=float(scores[b]),
                    extension=bool(from_extension[b]),
                    extension_candidates=candidates,
                )
            )
        return frames

    def match_extensions(
        self,
        extensions: ExtensionSet | None,
        probs: np.ndarray,
        embedding: np.ndarray,
        detector_scores: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B,) answered by the nearest extension intent: its nearest example is at least the
        threshold and as close as the nearest training utterance of the best intent (plus the
        margin; the kNN detector's own (B,) `detector_scores` when it is the bundle's); (B, E)
        each extension intent's similarity."""
        batch = len(embedding)
        if extensions is None or not extensions.intents:
            return np.zeros(batch, bool), np.zeros((batch, 0))
        similarity = extensions.similarity(embedding)  # (B, E)
        best = similarity.max(axis=1)  # (B,)
        trained = (
            detector_scores
            if self.detector.method == "knn"
            else in_scope_scores(
                "knn", self.knn_reference, probs, embedding, self.detector.in_scope
            )
        )  # (B,)
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

    def build_extensions(self, source: Path, text: str) -> ExtensionSet:
        """Parse and embed an extension file (off the serving path); ExtensionError if it must
        not go live."""
        reserved = set(self.bundle.labels.intents) | {self.oos_intent}
        intents = parse_extensions(source, text, reserved)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if not intents:
            empty = np.zeros((0, 1), np.float32)
            return ExtensionSet(str(source), digest, (), empty, np.zeros(0, int))
        if self.extension_threshold is None:
            raise ExtensionError(
                source,
                None,
                "the bundle has no kNN threshold: re-export it, or set "
                "extension_similarity_threshold",
            )
        if self.knn_reference is None:
            if not (self.bundle.path / KNN_EMBEDDINGS).is_file():
                raise ExtensionError(
                    source, None, f"{self.bundle.path} has no {KNN_EMBEDDINGS}: re-export it"
                )
            self.knn_reference = read_reference(self.bundle.path, "knn")
        texts = [e for i in intents for e in i.examples]
        owners = np.array([k for k, i in enumerate(intents) for _ in i.examples], dtype=int)
        rows = [
            self.infer(self.encode(texts[i : i + 32])).embedding for i in range(0, len(texts), 32)
        ]
        embeddings = np.concatenate(rows)  # (M, H)
        return ExtensionSet(str(source), digest, tuple(intents), embeddings, owners)

    def parse(self, texts: Sequence[str], top_k: int = 3) -> list[Frame]:
        enc = self.encode(texts)
        return self.decode(texts, enc, self.infer(enc), top_k)
