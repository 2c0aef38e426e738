"""Export a trained joint model to a verified model bundle (fp32 + int8 ONNX, fp16 for GPUs).

    python -m export.onnx --model artifacts/atis --out bundles/atis

Candidates: the plain export and onnxruntime's transformer-optimised graph, each also dynamically
quantised to int8 (per tensor), and the optimised graph quantised per output channel. Export
fails loudly unless the fp32 graph matches PyTorch on the whole dev split (max |Δ logit| ≤ 1e-3,
argmax agreement ≥ 99.9 %); int8 graphs are scored as the engine runs them (one utterance at a
time) and must lose ≤ 0.3 points of each dev metric. When none does, the encoder layers most
sensitive to quantisation (measured on dev) are kept in fp32 (`int8_keeping_sensitive_layers`);
when that fails too, the bundle serves fp32 alone, with a warning. Among the passing graphs the
fastest at batch 1 is kept and named in the bundle config; the fp32 graph is the optimised one
unless the plain one is clearly faster. Every choice reads dev; test metrics are only reported.

The fp16 graph (the optimised one with fp16 weights and activations, fp32 at its inputs and
outputs) is what a GPU serves: half the bytes to move, tensor cores. It joins the bundle when it
passes its own parity gate against PyTorch on dev (max |Δ logit| ≤ MAX_FP16_LOGIT_DIFF, argmax
agreement ≥ MIN_FP16_AGREEMENT); without one, it is left out with a warning. The check runs on
the CPU, where ONNX Runtime computes fp16 nodes in fp32 between casts (the roundings of fp16
storage, not of fp16 arithmetic); on a GPU, the CUDA provider's own answers still need the
same comparison (not run here: no GPU).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.transformers.onnx_model import OnnxModel
from onnxruntime.transformers.optimizer import optimize_model
from torch import nn
from tqdm import tqdm

from export.artifacts import Artifacts, load_artifacts
from export.data import Example, read_dataset, slot_values
from export.fetch import INPUT_ERRORS, resolve_dataset
from export.graph_run import graph_batches
from export.inference import Outputs, run_model, score
from export.model import JointModel, sentence_embedding
from export.out_of_scope import (
    DEFAULT_BUDGET,
    DEFAULT_FALSE_REJECTION,
    DEFAULT_LABEL,
    build_out_of_scope,
    graph_outputs,
)
from export.quantization import layer_groups, quantize, rank_layers
from service.contract.bundle import (
    FP32_MODEL,
    TOKENIZER,
    VARIANT_FILES,
    BundleConfig,
    CandidateReport,
    TrainingRecord,
    VariantRecord,
    write_config,
    write_labels,
)
from service.contract.graph import INPUTS, OUTPUTS, onnx_feeds
from service.contract.oos import METHODS
from service.contract.retrieval import IndexEntry, write_index
from service.contract.text import encode_words, split_words, word_scores

log = logging.getLogger(__name__)

OPSET = 17
MAX_ABS_LOGIT_DIFF = 1e-3
MIN_ARGMAX_AGREEMENT = 99.9
MAX_INT8_DROP = 0.3
MAX_FP16_LOGIT_DIFF = 0.05
MIN_FP16_AGREEMENT = 99.5
SAME_SPEED = 1.10  # batch-1 latencies within 10 % are timing noise, not a ranking
SENSITIVITY_SAMPLE = 1000  # dev utterances that rank the layers by int8 sensitivity
HEADLINE = ("intent_acc", "slot_f1", "sentence_acc")


class ParityError(RuntimeError):
    """An exported graph disagrees with its reference beyond the tolerances."""


class OnnxGraph(nn.Module):
    """What the graph computes: logits and a sentence embedding. Argmax and decoding stay out."""

    def __init__(self, model: JointModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.model.encode(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        intent_logits, slot_logits = self.model.heads(hidden, attention_mask)  # (B, I), (B, T, S)
        embedding = sentence_embedding(hidden, attention_mask)  # (B, H)
        return intent_logits, slot_logits, embedding


def input_names(model: JointModel) -> list[str]:
    takes_token_types = getattr(model.encoder.config, "type_vocab_size", 0) > 0
    return list(INPUTS if takes_token_types else INPUTS[:2])


def export_fp32(artifacts: Artifacts, path: Path, names: list[str]) -> None:
    """TorchScript export (dynamo=False): its graph is the one onnxruntime's transformer
    optimizer knows how to fuse (Attention, SkipLayerNorm, BiasGelu)."""
    enc = encode_words(artifacts.tokenizer, [split_words("book a flight to denver")] * 2)
    feeds = onnx_feeds(enc, names)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic |= {
        "intent_logits": {0: "batch"},
        "slot_logits": {0: "batch", 1: "sequence"},
        "embedding": {0: "batch"},
    }
    with warnings.catch_warnings():
        # The tracer warns about Python branches on shapes and about advanced indexing; the
        # graph is checked against PyTorch on the whole dev split right after, so they add
        # nothing a user could act on.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        export_graph(artifacts, path, names, feeds, dynamic)
    onnx.checker.check_model(str(path))


def export_graph(
    artifacts: Artifacts,
    path: Path,
    names: list[str],
    feeds: dict[str, np.ndarray],
    dynamic: dict[str, dict[int, str]],
) -> None:
    torch.onnx.export(
        OnnxGraph(artifacts.model).eval(),
        tuple(torch.from_numpy(feeds[n]) for n in names),  # the wrapper passes them by keyword
        str(path),
        input_names=names,
        output_names=list(OUTPUTS),
        dynamic_axes=dynamic,
        opset_version=OPSET,
        dynamo=False,
    )


def optimize(raw: Path, out: Path, artifacts: Artifacts) -> dict[str, int]:
    """onnxruntime's transformer optimizer; returns its fused-operator counts."""
    config = artifacts.model.encoder.config
    optimized = optimize_model(
        str(raw),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
    )
    optimized.save_model_to_file(str(out))
    return {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}


def to_fp16(graph: Path, out: Path) -> None:
    """fp16 weights and activations; inputs and outputs stay as they are (int64 ids, fp32
    logits), so tokenisation and decoding are the same for every variant."""
    model = OnnxModel(onnx.load(str(graph)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out))


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(
    sess: ort.InferenceSession,
    artifacts: Artifacts,
    examples: Sequence[Example],
    names: list[str],
    batch_size: int = 64,
) -> Outputs:
    """The same Outputs shape as the PyTorch path, so the same scoring applies."""
    intent_rows, word_rows = [], []
    for enc, (intent, slots, _) in graph_batches(
        sess, artifacts.tokenizer, examples, names, batch_size
    ):
        intent_rows.append(intent)
        word_rows += [
            word_scores(enc.word_index[b], slots[b], len(w)) for b, w in enumerate(enc.words)
        ]
    crf = artifacts.model.crf.numpy_params() if artifacts.model.crf is not None else None
    return Outputs(np.concatenate(intent_rows), word_rows, crf)


def retrieval_example(ex: Example) -> IndexEntry:
    return IndexEntry(ex.text, ex.intent, slot_values(ex))


def parity(reference: Outputs, candidate: Outputs) -> dict[str, float]:
    """Max |Δ logit| (intent and per-word slot logits) and argmax agreement in percent."""
    intent_diff = float(np.abs(reference.intent_logits - candidate.intent_logits).max())
    ref_words = np.concatenate([w for w in reference.word_logits])  # (ΣW, S)
    cand_words = np.concatenate([w for w in candidate.word_logits])
    kept = ~np.isnan(ref_words).any(axis=-1)
    slot_diff = float(np.abs(ref_words[kept] - cand_words[kept]).max())
    intent_agree = np.mean(reference.intent_logits.argmax(-1) == candidate.intent_logits.argmax(-1))
    tag_agree = np.mean(ref_words[kept].argmax(-1) == cand_words[kept].argmax(-1))
    return {
        "max_abs_logit_diff": max(intent_diff, slot_diff),
        "intent_argmax_agreement": round(100 * float(intent_agree), 3),
        "tag_argmax_agreement": round(100 * float(tag_agree), 3),
    }


def check_fp32_parity(result: dict[str, float], name: str) -> None:
    if (
        result["max_abs_logit_diff"] > MAX_ABS_LOGIT_DIFF
        or result["intent_argmax_agreement"] < MIN_ARGMAX_AGREEMENT
        or result["tag_argmax_agreement"] < MIN_ARGMAX_AGREEMENT
    ):
        raise ParityError(
            f"{name}: fp32 ONNX disagrees with PyTorch on dev: {result} (limits: max |Δ logit| "
            f"≤ {MAX_ABS_LOGIT_DIFF}, agreement ≥ {MIN_ARGMAX_AGREEMENT} %)"
        )


def fp16_parity_passes(result: dict[str, float]) -> bool:
    return (
        result["max_abs_logit_diff"] <= MAX_FP16_LOGIT_DIFF
        and result["intent_argmax_agreement"] >= MIN_FP16_AGREEMENT
        and result["tag_argmax_agreement"] >= MIN_FP16_AGREEMENT
    )


def batch1_latency_ms(sess: ort.InferenceSession, artifacts: Artifacts, examples, names) -> float:
    """Median batch-1 latency over a fixed sample, after warm-up: enough to rank candidates."""
    sample = list(examples[:100])
    run_onnx(sess, artifacts, sample[:10], names, batch_size=1)
    times = []
    for ex in sample:
        start = time.perf_counter()
        run_onnx(sess, artifacts, [ex], names, batch_size=1)
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 3)


@dataclass(frozen=True)
class Evaluation:
    """The splits an export is checked on (`limit` keeps only the first N of each)."""

    train: list[Example]
    dev: list[Example]
    test: list[Example]


def evaluation_splits(artifacts: Artifacts, data: str | None, limit: int | None) -> Evaluation:
    dataset = read_dataset(
        resolve_dataset(data or artifacts.config["dataset_source"]),
        seed=artifacts.config["train"]["seed"],
    )
    return Evaluation(*(dataset.splits[s][:limit] for s in ("train", "dev", "test")))


def export_candidates(
    artifacts: Artifacts, work: Path, names: list[str]
) -> tuple[dict[str, Path], dict[str, int]]:
    """The plain and optimised fp32 graphs, their int8 quantisations and the optimised graph in
    fp16, with the optimizer's fused-operator counts."""
    raw, opt = work / "plain.onnx", work / "optimized.onnx"
    export_fp32(artifacts, raw, names)
    fused = optimize(raw, opt, artifacts)
    log.info("transformer optimizer fused: %s", fused)
    candidates = {"plain": raw, "optimized": opt}
    for name in list(candidates):
        quantize(candidates[name], work / f"{name}.int8.onnx")
        candidates[f"{name}.int8"] = work / f"{name}.int8.onnx"
    quantize(opt, work / "optimized.int8pc.onnx", per_channel=True)
    candidates["optimized.int8pc"] = work / "optimized.int8pc.onnx"
    to_fp16(opt, work / "optimized.fp16.onnx")
    candidates["optimized.fp16"] = work / "optimized.fp16.onnx"
    return candidates, fused


def evaluate_candidates(
    artifacts: Artifacts, candidates: dict[str, Path], splits: Evaluation, names: list[str]
) -> tuple[dict[str, CandidateReport], dict[str, float]]:
    """Dev and test metrics and batch-1 latency of every candidate, fp32 and fp16 parity
    against PyTorch on dev (fp32 failing it raises ParityError), and PyTorch's own test
    metrics."""
    torch_dev = run_model(artifacts.model, artifacts.tokenizer, [ex.words for ex in splits.dev])
    torch_test = run_model(artifacts.model, artifacts.tokenizer, [ex.words for ex in splits.test])
    reports = {
        name: evaluate_candidate(artifacts, name, path, splits, names, torch_dev)
        for name, path in tqdm(
            candidates.items(), desc="checking graphs", unit="graph", disable=None
        )
    }
    return reports, headline(score(torch_test, splits.test, artifacts.labels))


def evaluate_candidate(
    artifacts: Artifacts,
    name: str,
    path: Path,
    splits: Evaluation,
    names: list[str],
    torch_dev: Outputs | None,
) -> CandidateReport:
    """One graph's report; fp32 and fp16 graphs are compared with PyTorch's dev outputs."""
    sess = session(path)
    served = as_served(name)
    test_out = run_onnx(sess, artifacts, splits.test, names, batch_size=served)
    dev_out = run_onnx(sess, artifacts, splits.dev, names, batch_size=served)
    parity_dev = None
    if torch_dev is not None and not is_int8(name):
        parity_dev = parity(torch_dev, dev_out)
        if not is_fp16(name):
            check_fp32_parity(parity_dev, name)
    report = CandidateReport(
        test=headline(score(test_out, splits.test, artifacts.labels)),
        dev=headline(score(dev_out, splits.dev, artifacts.labels)),
        batch1_p50_ms=batch1_latency_ms(sess, artifacts, splits.test, names),
        parity_dev_vs_torch=parity_dev,
    )
    log.info("%s: %s", name, report)
    return report


def output_shift(reference: Outputs, candidate: Outputs) -> float:
    """Mean over utterances of the largest |Δ logit|, intent and word tags together."""
    intent = np.abs(candidate.intent_logits - reference.intent_logits).max(axis=-1)  # (N,)
    words = [
        np.nanmax(np.abs(c - r), initial=0.0)
        for c, r in zip(candidate.word_logits, reference.word_logits, strict=True)
    ]
    return float(np.mean(np.maximum(intent, words)))


def int8_keeping_sensitive_layers(
    artifacts: Artifacts,
    fp32: Path,
    work: Path,
    splits: Evaluation,
    names: list[str],
    max_drop: float,
) -> tuple[str, Path] | None:
    """Per-channel int8 with the encoder layers most sensitive to quantisation kept in fp32 (the
    recipe for when no fully quantised graph passes): layers ranked on a dev sample, then the
    fewest of the most sensitive (up to half) whose dev drop is within half of `max_drop` (the
    gate, on dev too, then judges it as any other graph). None when no such graph exists."""
    groups = layer_groups(fp32)

    def outputs(path: Path, examples: Sequence[Example]) -> Outputs:
        return run_onnx(session(path), artifacts, examples, names, batch_size=1)

    sample = splits.dev[:SENSITIVITY_SAMPLE]
    reference = outputs(fp32, sample)
    ranked = rank_layers(fp32, work, groups, lambda p: output_shift(reference, outputs(p, sample)))
    log.info("int8 sensitivity per layer (mean largest |Δ logit|, %d dev): %s", len(sample), ranked)
    dev_fp32 = headline(score(outputs(fp32, splits.dev), splits.dev, artifacts.labels))
    for k in range(1, len(ranked) // 2 + 1):
        keep = [layer for layer, _ in ranked[:k]]
        path = work / f"optimized.int8pc-keep{k}.onnx"
        quantize(fp32, path, per_channel=True, keep_fp32=[n for g in keep for n in groups[g]])
        dev = headline(score(outputs(path, splits.dev), splits.dev, artifacts.labels))
        drop = max(dev_fp32[m] - dev[m] for m in dev_fp32)
        log.info("int8 with %s in fp32: dev drop %.2f points", ", ".join(keep), drop)
        if drop <= max_drop / 2:
            return f"optimized.int8pc+fp32:{'+'.join(keep)}", path
    return None


def is_int8(graph: str) -> bool:
    return ".int8" in graph


def is_fp16(graph: str) -> bool:
    return graph.endswith(".fp16")


def as_served(graph: str) -> int:
    """The batch size a graph is scored at: the engine runs int8 graphs one utterance at a time
    (dynamic activation scales would otherwise depend on batch-mates), fp32 and fp16 in
    batches."""
    return 1 if is_int8(graph) else 64


def headline(metrics: dict) -> dict[str, float]:
    """The headline metrics the dataset has (no slot F1 for an intent-only one)."""
    return {k: metrics[k] for k in HEADLINE if metrics[k] is not None}


def choose_variants(
    reports: dict[str, CandidateReport],
    max_int8_drop: float,
    pinned: dict[str, str] | None = None,
) -> dict[str, str]:
    """Chosen on dev; test is only reported. The fp32 graph: the optimised one unless the plain
    one is faster by more than SAME_SPEED (timing noise between identical exports must not flip
    it). The int8 graph: the fastest within `max_int8_drop` points of the fp32 graph on every
    headline dev metric (graphs within SAME_SPEED of the fastest count as equally fast, and the
    smallest dev drop wins among them); no int8 variant (a warning naming the drops) when none
    is. The fp16 graph when it passed its parity gate (else a warning). int8 and fp16 reports
    gain their drops, on dev (int8's gate) and on test (reported).

    `pinned` names the graph of a variant outright (a reproducible bundle: on a loaded machine
    timings can differ by more than SAME_SPEED); a pinned int8 graph must still pass the gate."""
    pinned = pinned or {}
    plain, optimized = reports["plain"].batch1_p50_ms, reports["optimized"].batch1_p50_ms
    fp32 = pinned.get("fp32") or ("plain" if plain * SAME_SPEED < optimized else "optimized")
    int8 = [n for n in reports if is_int8(n)]
    fp16 = [n for n in reports if is_fp16(n)]

    def drops(name: str, split: str) -> dict[str, float]:
        reference, graph = getattr(reports[fp32], split), getattr(reports[name], split)
        return {k: round(v - graph[k], 2) for k, v in reference.items()}

    for name in int8 + fp16:
        update = {"drop_vs_fp32": drops(name, "test"), "dev_drop_vs_fp32": drops(name, "dev")}
        reports[name] = reports[name].model_copy(update=update)
    choice = {"fp32": fp32}
    for name in fp16:
        if fp16_parity_passes(reports[name].parity_dev_vs_torch):
            choice["fp16"] = name
        else:
            log.warning(
                "fp16 graph %s fails its parity gate on dev (%s; limits: max |Δ logit| ≤ %s, "
                "agreement ≥ %s %%): the bundle holds no fp16 graph",
                name,
                reports[name].parity_dev_vs_torch,
                MAX_FP16_LOGIT_DIFF,
                MIN_FP16_AGREEMENT,
            )
    passing = [n for n in int8 if max(reports[n].dev_drop_vs_fp32.values()) <= max_int8_drop]
    if not passing:
        log.warning(
            "no int8 graph within %s points of fp32 on dev (%s)",
            max_int8_drop,
            ", ".join(f"{n}: {reports[n].dev_drop_vs_fp32}" for n in int8),
        )
        return choice
    if "int8" in pinned:
        if pinned["int8"] not in passing:
            raise ValueError(
                f"pinned int8 graph {pinned['int8']!r} is not among the passing {passing}"
            )
        return choice | {"int8": pinned["int8"]}
    fastest = min(reports[n].batch1_p50_ms for n in passing)
    about_as_fast = [n for n in passing if reports[n].batch1_p50_ms <= SAME_SPEED * fastest]
    return choice | {
        "int8": min(about_as_fast, key=lambda n: max(reports[n].dev_drop_vs_fp32.values()))
    }


def bundle_config(
    artifacts: Artifacts,
    model_dir: Path,
    names: list[str],
    reports: dict[str, CandidateReport],
    choice: dict[str, str],
    torch_metrics: dict[str, float],
    splits: Evaluation,
    fused: dict[str, int],
) -> BundleConfig:
    trained = artifacts.config
    variants = {
        variant: VariantRecord(
            file=VARIANT_FILES[variant], graph=graph, **reports[graph].model_dump()
        )
        for variant, graph in choice.items()
    }
    return BundleConfig(
        encoder=trained["encoder"],
        max_seq_len=trained["max_seq_len"],
        temperature=trained["temperature"],
        dataset=trained["dataset"],
        crf=artifacts.model.crf is not None,
        inputs=names,
        outputs=list(OUTPUTS),
        opset=OPSET,
        variants=variants,
        candidates=reports,
        evaluated_examples={"dev": len(splits.dev), "test": len(splits.test)},
        retrieval_examples=len(splits.train),
        fused_operators=fused,
        metrics={"torch": torch_metrics, **{f"onnx_{v}": r.test for v, r in variants.items()}},
        served_variant="int8" if "int8" in variants else "fp32",
        train=TrainingRecord(
            **{k: trained[k] for k in ("dev", "best_epoch", "train_seconds", "created_at")}
        ),
        source_model=str(model_dir),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def build_bundle(
    model_dir: Path,
    out: Path,
    data: str | None = None,
    max_int8_drop: float = MAX_INT8_DROP,
    limit_eval: int | None = None,
    oos: dict | None = None,
    pinned: dict[str, str] | None = None,
) -> BundleConfig:
    """Export, check parity, pick the fastest passing graphs, choose the out-of-scope detector
    (`oos`: keyword arguments of `build_out_of_scope`), write and checksum the bundle;
    `pinned` fixes a variant's graph (`choose_variants`).

    `limit_eval` scores only the first N dev/test utterances (smoke runs, never a real bundle).
    """
    artifacts = load_artifacts(model_dir, attn_implementation="eager")
    names = input_names(artifacts.model)
    splits = evaluation_splits(artifacts, data, limit_eval)
    work = out / ".build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    candidates, fused = export_candidates(artifacts, work, names)
    reports, torch_metrics = evaluate_candidates(artifacts, candidates, splits, names)
    choice = choose_variants(reports, max_int8_drop, pinned)
    if "int8" not in choice:
        mixed = int8_keeping_sensitive_layers(
            artifacts, candidates["optimized"], work, splits, names, max_int8_drop
        )
        if mixed is not None:
            name, path = mixed
            candidates[name] = path
            reports[name] = evaluate_candidate(artifacts, name, path, splits, names, None)
            choice = choose_variants(reports, max_int8_drop, pinned)
    if "int8" not in choice:
        log.warning("no int8 recipe passed the gate: the bundle serves fp32")
    for variant, graph in choice.items():
        shutil.copyfile(candidates[graph], out / VARIANT_FILES[variant])
    shutil.copyfile(model_dir / TOKENIZER, out / TOKENIZER)
    crf = artifacts.model.crf
    write_labels(out, artifacts.labels, crf.numpy_params() if crf is not None else None)
    write_index(
        out,
        graph_outputs(session(out / FP32_MODEL), artifacts, splits.train, names, 64).embeddings,
        [retrieval_example(ex) for ex in splits.train],
    )
    shutil.rmtree(work)
    served = "int8" if "int8" in choice else "fp32"
    out_of_scope = build_out_of_scope(
        session(out / VARIANT_FILES[served]),
        artifacts,
        out,
        splits.train,
        splits.dev,
        names,
        as_served(choice[served]),
        **(oos or {}),
    )
    config = bundle_config(
        artifacts, model_dir, names, reports, choice, torch_metrics, splits, fused
    )
    return write_config(out, config.model_copy(update={"out_of_scope": out_of_scope}))


def main(argv: list[str] | None = None) -> None:
    # onnxruntime's quantizer logs every tensor at INFO on the root logger: keep that quiet.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # `python -m export.onnx` runs this module as __main__: raise its own logger too.
    for name in ("export", __name__):
        logging.getLogger(name).setLevel(os.environ.get("LOGLEVEL", "INFO"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="folder written by export.train")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--data", help="dataset for parity checks (default: the training dataset)")
    p.add_argument(
        "--max-int8-drop",
        type=float,
        default=MAX_INT8_DROP,
        help="largest dev-metric drop (points) int8 may show against fp32",
    )
    p.add_argument(
        "--oos-label",
        default=DEFAULT_LABEL,
        help="the dataset's out-of-scope intent label (default: %(default)s)",
    )
    p.add_argument(
        "--oos-budget",
        type=float,
        default=DEFAULT_BUDGET,
        help="%% of the dev in-scope utterances an out-of-scope threshold may flag (the dev "
        "rule's and --oos-method's false-rejection budget; --open-world has its own; extension "
        "intents do not depend on it) (default: %(default)s)",
    )
    p.add_argument(
        "--oos-method",
        choices=["off", *METHODS],
        help="force an out-of-scope method (default: the best on dev; off without dev examples)",
    )
    p.add_argument(
        "--open-world",
        type=float,
        nargs="?",
        const=DEFAULT_FALSE_REJECTION,
        metavar="BUDGET",
        help="flag utterances no intent covers, learnt from in-scope data alone (no "
        "out-of-scope examples needed): kNN on the sentence embedding, threshold at BUDGET %% "
        "of the dev utterances flagged (default %(const)s)",
    )
    args = p.parse_args(argv)
    if args.open_world is not None and not 0 < args.open_world < 100:
        p.error(f"--open-world: the budget is a percentage in (0, 100), got {args.open_world}")
    args.out.mkdir(parents=True, exist_ok=True)
    oos = {
        "label": args.oos_label,
        "budget": args.oos_budget,
        "method": args.oos_method,
        "open_world": args.open_world,
    }
    try:
        config = build_bundle(args.model, args.out, args.data, args.max_int8_drop, oos=oos)
    except ParityError as e:
        raise SystemExit(f"export failed: {e}") from e
    except INPUT_ERRORS as e:
        raise SystemExit(f"error: {e}") from e
    graphs = ", ".join(
        f"{v} = {r.graph} ({r.batch1_p50_ms} ms)" for v, r in config.variants.items()
    )
    print(f"wrote {args.out}: {graphs}; serves {config.served_variant}; test {config.metrics}")
    print(f"out-of-scope: {config.out_of_scope.method} ({config.out_of_scope.chosen_by})")


if __name__ == "__main__":
    main()
