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
from service.contract.text import (
    EncodedBatch,
    decode_bio,
    decode_word_tags,
    encode_texts,
    load_tokenizer,
    softmax,
    word_scores,
)
from service.contract.types import Frame, IntentScore, RawOutputs
from service.cpus import cpu_quota, usable_cpus
from service.extensions import ExtensionSet, parse_extensions
from service.open_world import OpenWorld
from service.settings import EngineSettings, OpenWorldSettings

log = logging.getLogger(__name__)
TOP_INTENTS = 3  # the best intents a Frame carries: what the few-shot generator prompt lists

Provider = Literal["cpu", "cuda"]
GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
LENGTH_GROUP = 8  # utterances per length group of a batched (fp32, fp16) graph
WARMUP_TEXT = "show me flights from boston to denver tomorrow morning"


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


class Engine:
    """ONNX Runtime over one bundle variant: fp32 and fp16 run whole batches on one session;
    int8 runs each utterance alone (`per_row`) on `instances` sessions side by side, and a
    batch of one on `solo`, a session with all the intra-op threads."""

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
        self.open_world = OpenWorld.of_bundle(self.bundle, open_world or OpenWorldSettings())
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
        # A lone utterance has nothing to run beside it: on one instance it would leave the
        # other instances' threads idle, so it runs on a session with all of them.
        self.solo = (
            self.open_session(self.intra_op_threads, graph_optimization)
            if self.per_row and settings.solo_session and threads < self.intra_op_threads
            else None
        )
        self.providers = self.sessions[0].get_providers()
        if self.variant == "fp16" and self.providers[0] == "CPUExecutionProvider":
            log.warning(
                "the fp16 graph on the CPU provider: ONNX Runtime computes it through casts, no "
                "faster than fp32 (on CPU serve int8, or fp32)"
            )
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
        """Run a few batches so the first real request does not pay for lazy set-up (and a
        lone utterance too, when that runs on its own session)."""
        for _ in range(batches):
            self.parse([WARMUP_TEXT] * batch_size)
            if self.solo is not None and batch_size > 1:
                self.parse([WARMUP_TEXT])

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        return encode_texts(self.tokenizer, texts)

    def infer(self, enc: EncodedBatch) -> RawOutputs:
        if self.per_row:
            return self.infer_rows(enc)
        return self.infer_by_length(enc)

    def infer_by_length(self, enc: EncodedBatch) -> RawOutputs:
        """A batched graph's cost grows with batch × its longest utterance: run the batch as
        groups of LENGTH_GROUP utterances of similar length, each cut to its own longest, so
        short utterances stop paying for the padding of a long one (assembled in the batch's
        order; padding is masked, so each answer is what the full batch gives)."""
        feeds = onnx_feeds(enc, self.bundle.config.inputs)  # each (B, T)
        lengths = enc.attention_mask.sum(axis=1)  # (B,)
        order = np.argsort(lengths, kind="stable")
        batch, seq_len = enc.input_ids.shape
        parts = []
        for start in range(0, batch, LENGTH_GROUP):
            rows = order[start : start + LENGTH_GROUP]
            n = int(lengths[rows].max())
            outputs = self.sessions[0].run(
                list(OUTPUTS), {k: v[rows, :n] for k, v in feeds.items()}
            )
            parts.append((rows, outputs))
        intent = np.empty((batch, parts[0][1][0].shape[-1]), dtype=parts[0][1][0].dtype)
        slots = np.zeros((batch, seq_len, parts[0][1][1].shape[-1]), dtype=parts[0][1][1].dtype)
        embedding = np.empty((batch, parts[0][1][2].shape[-1]), dtype=parts[0][1][2].dtype)
        for rows, (part_intent, part_slots, part_embedding) in parts:
            intent[rows] = part_intent  # (g, I)
            slots[rows, : part_slots.shape[1]] = part_slots  # (g, n, S) into (B, T, S)
            embedding[rows] = part_embedding  # (g, H)
        return RawOutputs(intent, slots, embedding)

    def infer_rows(self, enc: EncodedBatch) -> RawOutputs:
        """One session call per utterance on its unpadded tokens, spread over the instances
        (ONNX Runtime releases the GIL), assembled as one batch; a lone utterance on `solo`."""
        feeds = onnx_feeds(enc, self.bundle.config.inputs)  # each (B, T)
        lengths = enc.attention_mask.sum(axis=1)  # (B,)

        def row(b: int, session: ort.InferenceSession | None = None) -> list[np.ndarray]:
            session = session or self.sessions[b % self.instances]
            n = lengths[b]
            return session.run(list(OUTPUTS), {k: v[b : b + 1, :n] for k, v in feeds.items()})

        if len(lengths) == 1:  # nothing to overlap: no hop to the pool
            rows = [row(0, self.solo)]
        elif self.instances == 1:
            rows = [row(b) for b in range(len(lengths))]
        else:
            rows = list(self.pool.map(row, range(len(lengths))))
        batch, seq_len = enc.input_ids.shape
        slots = np.zeros((batch, seq_len, rows[0][1].shape[-1]), dtype=rows[0][1].dtype)
        for b, (_, row_slots, _) in enumerate(rows):
            slots[b, : row_slots.shape[1]] = row_slots[0]  # (n_b, S) into (T, S)
        intent = np.concatenate([r[0] for r in rows])  # (B, I)
        embedding = np.concatenate([r[2] for r in rows])  # (B, H)
        return RawOutputs(intent, slots, embedding)

    def decode(
        self, texts: Sequence[str], enc: EncodedBatch, raw: RawOutputs, top_k: int = TOP_INTENTS
    ) -> list[Frame]:
        """Calibrated intent probabilities, the open-world decision, the `top_k` best intents
        (the server always decodes TOP_INTENTS; a response's own top_k is cut from the
        probabilities at the edge), and BIO slots with character offsets."""
        labels, temperature = self.bundle.labels, self.bundle.config.temperature
        probs = softmax(raw.intent_logits.astype(np.float64), temperature)  # (B, I)
        world = self.open_world
        decided = world.decide(probs, raw.embedding)
        frames = []
        for b, text in enumerate(texts):
            order = np.argsort(-probs[b])[: max(1, top_k)]
            top = [IntentScore(world.answer_names[i], float(probs[b, i])) for i in order]
            intent, confidence = top[0].label, top[0].probability
            best = int(decided.best_in_scope[b])
            guess = IntentScore(world.answer_names[best], float(probs[b, best]))
            candidates = decided.candidates[b]
            if decided.from_extension[b]:
                intent, confidence = candidates[0].intent.name, candidates[0].similarity
            elif decided.out_of_scope[b]:
                intent, confidence = world.oos_intent, 1.0 - guess.probability
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
                    out_of_scope=bool(decided.out_of_scope[b]),
                    in_scope_score=float(decided.scores[b]),
                    extension=bool(decided.from_extension[b]),
                    extension_candidates=candidates,
                    best_in_scope=guess,
                )
            )
        return frames

    def build_extensions(self, source: Path, text: str) -> ExtensionSet:
        """Parse and embed an extension file (off the serving path); ExtensionError if it must
        not go live."""
        intents = parse_extensions(source, text, self.open_world.reserved)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if not intents:
            empty = np.zeros((0, 1), np.float32)
            return ExtensionSet(str(source), digest, (), empty, np.zeros(0, int))
        self.open_world.check_extensions_possible(source)
        texts = [e for i in intents for e in i.examples]
        owners = np.array([k for k, i in enumerate(intents) for _ in i.examples], dtype=int)
        rows = [
            self.infer(self.encode(texts[i : i + 32])).embedding for i in range(0, len(texts), 32)
        ]
        embeddings = np.concatenate(rows)  # (M, H)
        return ExtensionSet(str(source), digest, tuple(intents), embeddings, owners)

    def parse(self, texts: Sequence[str], top_k: int = TOP_INTENTS) -> list[Frame]:
        enc = self.encode(texts)
        return self.decode(texts, enc, self.infer(enc), top_k)
