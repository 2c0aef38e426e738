"""Fine-tune the default GPT to write the JSON frame of an utterance (the GPT-1 recipe: a
pre-trained LM, then supervised fine-tuning on the task).

    python -m export.train_generator --data atis --out artifacts/generator-atis

Each training utterance becomes one chat: the short plain prompt (`service.contract.prompt`) and,
as the assistant's turn, `{"intent": ..., "slots": [{"name": ..., "value": ...}]}`. The loss
covers the answer tokens only. The result is a normal checkpoint: serve it with
`--generator-backend local --generator-model DIR --generator-prompt plain`, or with any
OpenAI-compatible server. A batch of 16 chats (~130 tokens each) costs 12-18 s on one CPU thread
here (bf16 autocast), so the default trains one epoch on a seeded sample of --max-examples
utterances (13-19 min); `--max-examples 0` uses all.

    python -m export.train_generator --task scope --data clinc150 --bundle bundles/clinc150 \
        --out artifacts/generator-scope-clinc150

`--task scope` trains the out-of-scope decision instead (`export.scope_chats`): the encoder's
candidate intents in, one of them or "none" out. It keeps every utterance of the bundle's trained
out-of-scope label (the scarce class) beside --max-examples in-scope ones. Serve it with
`--generator-prompt plain` and `NLU_OUT_OF_SCOPE_ROUTE_BAND` > 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from export.data import Example, read_dataset, slot_values
from export.fetch import INPUT_ERRORS, resolve_dataset
from export.lm_checkpoint import load_lm, save_checkpoint
from export.scope_chats import scope_chats
from service.contract.bundle import load_bundle
from service.contract.prompt import (
    NONE,
    Messages,
    answer_json,
    build_plain_messages,
    build_scope_messages,
)
from service.contract.text import IGNORE_INDEX

log = logging.getLogger(__name__)
TRAINING_RECORD = "nlu_generator.json"
BUCKET_BATCHES = 8
Task = Literal["frame", "scope"]


@dataclass
class GeneratorTrainConfig:
    data: str
    out: str
    task: Task = "frame"
    bundle: str = ""  # scope: the bundle whose encoder proposes the candidates
    candidates: int = 3  # scope: as the router's score_candidates
    none_share: float = 0.1  # scope: in-scope chats whose right intent is not a candidate
    model: str = ""  # empty: packaged SmolLM2-135M-Instruct GGUF
    max_examples: int = 1000
    epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-4
    warmup_steps: int = 5
    threads: int = 0  # 0: torch default (all cores)
    seed: int = 13


def chat_tokens(tokenizer, prompt: Messages, answer: str) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one training chat; labels mask everything but the answer."""
    full = [*prompt, {"role": "assistant", "content": answer}]
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    full_ids = tokenizer.apply_chat_template(full, tokenize=True)
    prompt_ids = getattr(prompt_ids, "input_ids", prompt_ids)
    full_ids = getattr(full_ids, "input_ids", full_ids)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template renders the prompt differently inside the full chat")
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids) :]
    return full_ids, labels


def collate(items: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id)  # (B, T)
    labels = torch.full((len(items), width), IGNORE_INDEX)  # (B, T)
    attention_mask = torch.zeros((len(items), width), dtype=torch.long)  # (B, T)
    for b, (ids, lab) in enumerate(items):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        labels[b, : len(lab)] = torch.tensor(lab)
        attention_mask[b, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def length_buckets(
    items: list[tuple[list[int], list[int]]], batch_size: int, rng: random.Random
) -> list[list[tuple[list[int], list[int]]]]:
    """Shuffled batches of similar length (sorted within windows of BUCKET_BATCHES batches), so
    a batch pads to ~its own length rather than the longest utterance's."""
    order = list(range(len(items)))
    rng.shuffle(order)
    window = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda j: len(items[j][0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [[items[j] for j in batch] for batch in batches]


def answer_loss(lm, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy on the answer tokens only. The vocabulary projection runs on
    those positions alone: full (B, T, 49152) logits cost most of a step's time and memory."""
    hidden = lm.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state  # (B, T, H)
    targets = batch["labels"][:, 1:]  # (B, T-1)
    keep = targets != IGNORE_INDEX  # (B, T-1)
    logits = lm.lm_head(hidden[:, :-1][keep])  # (N, V)
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def frame_chats(train: list[Example], max_examples: int) -> list[tuple[Messages, str]]:
    """The plain prompt and the utterance's JSON frame."""
    return [
        (build_plain_messages(ex.text), answer_json(ex.intent, slot_values(ex)))
        for ex in train[: max_examples or None]
    ]


def decision_chats(
    train: list[Example], cfg: GeneratorTrainConfig, rng: random.Random
) -> list[tuple[Messages, str]]:
    """The scope prompt (candidates + "none", no examples) and the chosen candidate."""
    if not cfg.bundle:
        raise ValueError("--task scope needs --bundle (its encoder proposes the candidates)")
    label = load_bundle(Path(cfg.bundle)).config.trained_out_of_scope_label
    in_scope = [ex for ex in train if ex.intent != label]
    chosen = [ex for ex in train if ex.intent == label] + in_scope[: cfg.max_examples or None]
    rng.shuffle(chosen)
    chats = scope_chats(chosen, Path(cfg.bundle), cfg.candidates, cfg.none_share, rng)
    return [
        (build_scope_messages(c.text, c.candidates, [], None), answer_json(c.answer, []))
        for c in chats
    ]


def train_generator(cfg: GeneratorTrainConfig) -> dict:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dataset = read_dataset(resolve_dataset(cfg.data), Path(cfg.data).name)
    rng = random.Random(cfg.seed)
    train = list(dataset.splits["train"])
    rng.shuffle(train)
    chats = (
        decision_chats(train, cfg, rng)
        if cfg.task == "scope"
        else frame_chats(train, cfg.max_examples)
    )
    lm, tokenizer = load_lm(cfg.model)
    items = [chat_tokens(tokenizer, prompt, answer) for prompt, answer in chats]
    steps = cfg.epochs * math.ceil(len(items) / cfg.batch_size)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * max(0.0, 1 - s / steps),
    )
    lm.train()
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(total=steps, desc="fine-tune", unit="batch", disable=None)
    for _epoch in range(cfg.epochs):
        for batch_items in length_buckets(items, cfg.batch_size, rng):
            batch = collate(batch_items, tokenizer.pad_token_id)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = answer_loss(lm, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(round(loss.item(), 4))
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    lm.eval()
    out = Path(cfg.out)
    save_checkpoint(lm, tokenizer, out)
    record = {
        "config": asdict(cfg),
        "dataset": dataset.name,
        "examples": len(items),
        "steps": steps,
        "train_seconds": round(time.perf_counter() - started, 1),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "losses": losses,
        "prompt": "plain",
        "task": cfg.task,
        "answers": {
            "none": sum(1 for _, a in chats if json.loads(a)["intent"] == NONE),
            "intent": sum(1 for _, a in chats if json.loads(a)["intent"] != NONE),
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    log.info("wrote %s (%d steps, loss %.3f → %.3f)", out, steps, losses[0], losses[-1])
    return record


def main(argv: list[str] | None = None) -> None:
    defaults = GeneratorTrainConfig(data="", out="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="dataset name or folder")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--task", choices=["frame", "scope"], default=defaults.task)
    p.add_argument("--bundle", default=defaults.bundle, help="scope: candidates' bundle")
    p.add_argument("--candidates", type=int, default=defaults.candidates)
    p.add_argument("--none-share", type=float, default=defaults.none_share)
    p.add_argument("--model", default=defaults.model, help="base LM (default: packaged SmolLM2)")
    p.add_argument("--max-examples", type=int, default=defaults.max_examples)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--threads", type=int, default=defaults.threads)
    p.add_argument("--seed", type=int, default=defaults.seed)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        train_generator(GeneratorTrainConfig(**vars(args)))
    except INPUT_ERRORS as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
