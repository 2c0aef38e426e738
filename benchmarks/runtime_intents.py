"""Suite `runtime-intents`: intents added through the extension file, without retraining.

    python -m benchmarks runtime-intents [--data clinc150] [--held-out 15]

A fixed, seeded list of HELD_OUT in-scope CLINC150 intents is held out: their training and dev
utterances are dropped and a model is trained and exported on the rest (`ensure_bundle`, cached
under bundles/). Before the intents are added, the right answer for their test utterances is
out-of-scope; then an extension file gives each EXAMPLES_PER_INTENT of its training utterances
(seeded) and its name as the description (CLINC150 has no descriptions), loaded through the
server's own loader. The matching rule's threshold and margin are chosen on the dev split (the
held-out intents' dev utterances, which the model never saw, against the other intents'): the
most held-out accuracy costing the others at most MAX_OTHERS_LOSS points. Reported on the test
split, before and after (with the defaults and with the dev choice): the held-out intents'
accuracy (after: the right extension intent), the other intents' accuracy (right intent, not
flagged) and out-of-scope recall on the dataset's own out-of-scope utterances. Target (issue
20): with the bundle's rule, chosen at export without out-of-scope data, at least TARGET_ADDED
% of the added intents at most MAX_OTHERS_LOSS point lost on the others.

With a generator (`generator_confirms`), the default rule's threshold makes extension intents
candidates instead of answers: every test utterance with one goes through the service's Router to
the generator, which chooses among the encoder's top intents, the extension candidates and
"none": the few-shot SmolLM2 scorer sees each candidate's description and examples, the scope
model fine-tuned on the held-out bundle's training data (`benchmarks.scope_routing`: it never saw
the held-out intents) the candidate names alone. Answers are cached like the other generator
suites' (artifacts/generator-cache/).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.generation import CACHE_DIR, GENERATOR_TIMEOUT_S, cached_rows, model_id
from benchmarks.load.measure import latency_stats
from benchmarks.load.meta import run_meta
from benchmarks.scope_routing import CANDIDATES, SCOPE_GENERATORS, ScopeGenerator
from benchmarks.suite import Suite, write_json
from export.fetch import resolve_dataset
from export.onnx import build_bundle
from export.out_of_scope import DEFAULT_LABEL
from export.train import TrainConfig, train
from service.contract.bundle import load_bundle
from service.contract.paths import PROJECT_ROOT
from service.contract.types import Frame
from service.extension_watch import load_extensions
from service.generators.registry import BACKENDS
from service.loading import build_router
from service.router import EXAMPLES_SHOWN, Router
from service.runtime import Engine
from service.settings import (
    EngineSettings,
    GeneratorSettings,
    OpenWorldSettings,
    RoutingSettings,
    Settings,
)

log = logging.getLogger(__name__)

HELD_OUT = 15
THRESHOLD_OFFSETS = (0.0, -0.05, -0.1, -0.15)  # below the bundle's kNN threshold
MARGINS = (0.0, -0.02, -0.05, -0.1)
MAX_OTHERS_LOSS = 1.0  # points of the other intents' accuracy the extensions may cost
EXAMPLES_PER_INTENT = 5
SEED = 13
SPLITS = ("train", "dev", "test")
TARGET_ADDED = 85.0  # % of the added intents' test utterances, with the bundle's rule


def read_rows(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def held_out_intents(
    folder: Path, oos_label: str, n: int = HELD_OUT, seed: int = SEED
) -> list[str]:
    intents = sorted({r["intent"] for r in read_rows(folder, "train")} - {oos_label})
    return sorted(random.Random(seed).sample(intents, n))


def write_dataset(source: Path, out: Path, held_out: list[str]) -> None:
    """train and dev without the held-out intents; test untouched (scored by the suite)."""
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = read_rows(source, split)
        kept = rows if split == "test" else [r for r in rows if r["intent"] not in held_out]
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))


def ensure_bundle(source: Path, held_out: list[str], bundle: Path, train_config: dict) -> Path:
    """The held-out model's bundle; trained and exported first when it does not exist yet."""
    if (bundle / "config.json").is_file():
        return bundle
    data = PROJECT_ROOT / "build" / bundle.name
    model = PROJECT_ROOT / "artifacts" / bundle.name
    write_dataset(source, data, held_out)
    log.info("training %s without %d intents (%s)", model, len(held_out), train_config)
    train(TrainConfig(data=str(data), out=str(model), **train_config))
    build_bundle(model, bundle)
    return bundle


def extension_yaml(source: Path, held_out: list[str], per_intent: int, seed: int) -> str:
    rng = random.Random(seed)
    train_rows = read_rows(source, "train")
    intents = []
    for name in held_out:
        texts = [r["text"] for r in train_rows if r["intent"] == name]
        intents.append(
            {
                "name": name,
                "description": name.replace("_", " "),
                "examples": rng.sample(texts, per_intent),
            }
        )
    return yaml.safe_dump({"intents": intents}, sort_keys=False)


def parse_all(engine: Engine, texts: list[str], batch_size: int = 64) -> list[Frame]:
    chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    return [frame for chunk in chunks for frame in engine.parse(chunk)]


def score(
    frames: list[Frame], gold: list[str], held_out: set[str], oos_label: str, added: bool
) -> dict:
    """Percentages over the test split: held-out intents (right answer: out-of-scope before
    they are added, the extension intent after), the other in-scope intents, and OOS recall."""

    def right(frame: Frame, truth: str) -> bool:
        if truth == oos_label:
            return frame.out_of_scope
        if truth in held_out and not added:
            return frame.out_of_scope
        return frame.intent == truth and not frame.out_of_scope

    groups = {
        "held_out": [t in held_out for t in gold],
        "others": [t not in held_out and t != oos_label for t in gold],
        "oos": [t == oos_label for t in gold],
    }
    ok = np.array([right(f, t) for f, t in zip(frames, gold, strict=True)])
    return {k: round(100 * float(ok[np.array(m)].mean()), 2) for k, m in groups.items()}


def choose_on_dev(
    engine: Engine, texts: list[str], gold: list[str], held_out: set[str], oos_label: str
) -> tuple[float, float, list[dict]]:
    """(threshold, margin) on the dev split (the held-out intents' dev utterances were never
    trained on): the most held-out accuracy that costs the other intents at most
    MAX_OTHERS_LOSS points; the default (bundle threshold, margin 0) when nothing does better."""
    base = score(parse_all(engine, texts), gold, held_out, oos_label, added=False)["others"]
    default = (engine.open_world.extension_threshold, engine.open_world.extension_margin)
    tried = []
    for offset in THRESHOLD_OFFSETS:
        for margin in MARGINS:
            engine.open_world.extension_threshold, engine.open_world.extension_margin = (
                default[0] + offset,
                margin,
            )
            m = score(parse_all(engine, texts), gold, held_out, oos_label, added=True)
            tried.append(
                {"threshold": engine.open_world.extension_threshold, "margin": margin, **m}
            )
    engine.open_world.extension_threshold, engine.open_world.extension_margin = default
    allowed = [t for t in tried if t["others"] >= base - MAX_OTHERS_LOSS]
    best = max(allowed, key=lambda t: t["held_out"], default=None)
    return (best["threshold"], best["margin"], tried) if best else (*default, tried)


def confirm_router(engine: Engine, generator: ScopeGenerator, lm: str) -> Router:
    """The server's Router as `extension_generator_confirms` builds it, around a local LM."""
    backend = BACKENDS["local"].from_settings(
        GeneratorSettings(generator_backend="local", generator_model=lm)
    )
    backend.load()
    settings = Settings(
        routing=RoutingSettings(
            generator_timeout_s=GENERATOR_TIMEOUT_S,
            score_candidates=CANDIDATES,
            generator_prompt=generator.prompt,
        ),
        open_world=OpenWorldSettings(
            extension_intents_file=engine.open_world.extensions.source,
            extension_generator_confirms=True,
        ),
    )
    return build_router(engine, settings, backend)


def generator_confirms(
    engine: Engine,
    frames: list[Frame],
    gold: list[str],
    held_out: set[str],
    oos_label: str,
    generator: ScopeGenerator,
    lm: str,
    cache: Path,
) -> dict:
    """Test accuracies when `generator` decides every utterance with extension candidates
    (`frames` parsed with the default rule), and its cost."""
    asked = [i for i, f in enumerate(frames) if f.extension_candidates]
    extensions = engine.open_world.extensions
    key = json.dumps(
        [
            engine.bundle.config_sha256,
            extensions.sha256 if extensions else "",
            engine.open_world.extension_threshold,
            model_id(lm),
            generator.prompt,
            CANDIDATES,
            EXAMPLES_SHOWN,
            "confirm-v1",
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = f"confirm-{engine.bundle.config.dataset}-test-{digest}"

    @functools.cache
    def router() -> Router:  # loaded only when an answer is not cached
        return confirm_router(engine, generator, lm)

    def one(i: int) -> dict:
        started = time.perf_counter()
        routed = asyncio.run(
            router().route(frames[i], force=False, threshold=0.0, remaining_s=None)
        )
        ms = (time.perf_counter() - started) * 1000
        return {
            "intent": routed.intent,
            "out_of_scope": routed.out_of_scope,
            "extension": routed.extension,
            "ms": ms,
            "reason": routed.fallback_reason,
        }

    rows = cached_rows(cache / f"{name}.jsonl", asked, one, f"{generator.name} confirms")
    answered = [
        dataclasses.replace(f, intent=rows[i]["intent"], out_of_scope=rows[i]["out_of_scope"])
        if i in rows
        else f
        for i, f in enumerate(frames)
    ]
    m = score(answered, gold, held_out, oos_label, added=True)
    ms = [rows[i]["ms"] for i in asked]
    latency = latency_stats(np.array(ms) / 1000, 1) if ms else {"p50_ms": 0.0, "p99_ms": 0.0}
    return {
        "extension_similarity_threshold": engine.open_world.extension_threshold,
        "generator": generator.label.replace(", candidates or none", ""),
        "model": lm or "packaged SmolLM2",
        "asked_fraction": round(100 * len(asked) / len(frames), 2),
        "added_accuracy": m["held_out"],
        "others_accuracy_after": m["others"],
        "oos_recall_after": m["oos"],
        "generator_p50_ms": latency["p50_ms"],
        "generator_p99_ms": latency["p99_ms"],
        "generator_failures": sum(1 for i in asked if rows[i]["reason"]),
    }


def measure(
    source: Path,
    bundle: Path,
    held_out: list[str],
    oos_label: str,
    work: Path,
    generators: list[tuple[ScopeGenerator, str]],
    cache: Path,
) -> dict:
    """Before/after accuracies of the held-out bundle as served, extensions loaded by the
    server's own loader: with the default rule (the bundle's kNN threshold, margin 0), with
    the threshold and margin chosen on dev, and with each (generator, model) confirming."""
    engine = Engine(bundle, settings=EngineSettings())
    test = read_rows(source, "test")
    texts, gold = [r["text"] for r in test], [r["intent"] for r in test]
    before = score(parse_all(engine, texts), gold, set(held_out), oos_label, added=False)
    path = work / "extensions.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(extension_yaml(source, held_out, EXAMPLES_PER_INTENT, SEED))
    load_extensions(engine, path)
    default_rule = engine.open_world.extension_threshold, engine.open_world.extension_margin
    rule = engine.open_world.record.extension if engine.open_world.record else None
    default_frames = parse_all(engine, texts)
    default = score(default_frames, gold, set(held_out), oos_label, added=True)
    confirmed = [
        generator_confirms(engine, default_frames, gold, set(held_out), oos_label, g, lm, cache)
        for g, lm in generators
    ]
    dev = read_rows(source, "dev")
    threshold, margin, tried = choose_on_dev(
        engine, [r["text"] for r in dev], [r["intent"] for r in dev], set(held_out), oos_label
    )
    engine.open_world.extension_threshold, engine.open_world.extension_margin = threshold, margin
    after = score(parse_all(engine, texts), gold, set(held_out), oos_label, added=True)
    return {
        "held_out": held_out,
        "examples_per_intent": EXAMPLES_PER_INTENT,
        "added_accuracy": after["held_out"],
        "added_answered_out_of_scope_before": before["held_out"],
        "others_accuracy_before": before["others"],
        "others_accuracy_after": after["others"],
        "oos_recall_before": before["oos"],
        "oos_recall_after": after["oos"],
        "extension_similarity_threshold": threshold,
        "extension_margin": margin,
        "with_defaults": {  # the bundle's rule, chosen at export without out-of-scope data
            "chosen_by": rule.chosen_by if rule is not None else "bundle without a rule",
            "extension_similarity_threshold": default_rule[0],
            "extension_margin": default_rule[1],
            "compared_with": rule.compared_with if rule is not None else "nearest",
            "added_accuracy": default["held_out"],
            "others_accuracy_after": default["others"],
            "oos_recall_after": default["oos"],
        },
        "generator_confirms": confirmed,
        "dev_tried": tried,
        "bundle": str(bundle),
        "extension_file": path.read_text(),
    }


def default_rule_name(with_defaults: dict) -> str:
    """Which rule a bundle serves by default: one chosen at export, or (older bundles) the kNN
    out-of-scope threshold."""
    if "chosen_by" in with_defaults and with_defaults["chosen_by"] != "bundle without a rule":
        return "the bundle's rule (chosen at export without out-of-scope data)"
    return "default rule (the bundle's kNN threshold)"


class RuntimeIntentsSuite(Suite):
    name = "runtime-intents"
    help = "intents held out of training, added back through the extension file (CLINC150)"
    in_default_run = False

    def load_result(self, results: Path) -> dict | None:
        path = results / "runtime_intents.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", default="clinc150")
        parser.add_argument("--oos-label", default=DEFAULT_LABEL)
        parser.add_argument("--held-out", type=int, default=HELD_OUT, help="intents held out")
        parser.add_argument(
            "--holdout-bundle",
            type=Path,
            help="bundle trained without the held-out intents (default: bundles/DATA-holdoutN; "
            "trained and exported first when missing)",
        )
        parser.add_argument("--holdout-epochs", type=int, default=8)
        parser.add_argument("--encoder", help="encoder for the held-out model (default: packaged)")
        parser.add_argument("--threads", type=int, help="torch threads for that training")
        parser.add_argument(
            "--generators",
            nargs="*",
            default=["few_shot", "fine_tuned"],
            choices=SCOPE_GENERATORS,
            help="generators confirming extension candidates (one row each; none: the "
            "similarity rule alone)",
        )
        parser.add_argument(
            "--lm", default="", help="model of the few-shot generator (default: SmolLM2)"
        )

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        source = resolve_dataset(args.data)
        held_out = held_out_intents(source, args.oos_label, args.held_out)
        bundle = ensure_bundle(
            source,
            held_out,
            args.holdout_bundle
            or PROJECT_ROOT / "bundles" / f"{Path(args.data).name}-holdout{args.held_out}",
            {"epochs": args.holdout_epochs, "encoder": args.encoder, "threads": args.threads},
        )
        dataset = load_bundle(bundle).config.dataset
        skipped, confirmers = [], []
        for name in args.generators:
            generator = SCOPE_GENERATORS[name]
            reason = generator.missing(dataset)
            if reason:
                skipped.append({"generator": name, "reason": reason})
                continue
            confirmers.append((generator, generator.model_path(dataset) or args.lm))
        work = out_dir / "work" if args.quick else PROJECT_ROOT / "build" / "runtime-intents"
        cache = out_dir / "generator-cache" if args.quick else CACHE_DIR
        report = measure(source, bundle, held_out, args.oos_label, work, confirmers, cache)
        result = {
            "meta": run_meta(),
            dataset: {**report, "target_added": TARGET_ADDED, "skipped_generators": skipped},
        }
        write_json(out_dir / "runtime_intents.json", result)
        return result

    def summary(self, result: dict) -> str:
        lines = []
        for dataset, runtime in result.items():
            if dataset == "meta":
                continue
            defaults = runtime["with_defaults"]
            lines += [
                f"**{dataset}**: {len(runtime['held_out'])} intents held out of training, then "
                f"added through the extension file with {runtime['examples_per_intent']} "
                f"examples each (bundle's rule: {defaults['chosen_by']}):",
                "",
                "| | held-out intents | other intents | OOS recall |",
                "|---|---|---|---|",
                f"| before (right answer: out-of-scope) | "
                f"{runtime['added_answered_out_of_scope_before']:.2f} | "
                f"{runtime['others_accuracy_before']:.2f} | {runtime['oos_recall_before']:.2f} |",
                f"| after, {default_rule_name(defaults)} (threshold "
                f"{defaults['extension_similarity_threshold']:.3f}, margin "
                f"{defaults['extension_margin']:+.3f}, {defaults.get('compared_with', 'nearest')}"
                f") | {defaults['added_accuracy']:.2f} | "
                f"{defaults['others_accuracy_after']:.2f} | {defaults['oos_recall_after']:.2f} |",
                f"| after, chosen with the held-out intents' dev utterances (threshold "
                f"{runtime['extension_similarity_threshold']:.3f}, margin "
                f"{runtime['extension_margin']:+.3f}) | {runtime['added_accuracy']:.2f} | "
                f"{runtime['others_accuracy_after']:.2f} | {runtime['oos_recall_after']:.2f} |",
            ]
            for confirm in runtime.get("generator_confirms", []):
                lines.append(
                    f"| after, generator confirms ({confirm['generator']}; candidates past "
                    f"{confirm['extension_similarity_threshold']:.3f}, "
                    f"{confirm['asked_fraction']:.1f} % of test asked, p50 "
                    f"{confirm['generator_p50_ms']:.0f} ms) | {confirm['added_accuracy']:.2f} | "
                    f"{confirm['others_accuracy_after']:.2f} | {confirm['oos_recall_after']:.2f} |"
                )
            for s in runtime.get("skipped_generators", []):
                lines.append(f"\nNot measured: {s['generator']} generator: {s['reason']}.")
            lost = runtime["others_accuracy_before"] - defaults["others_accuracy_after"]
            met = defaults["added_accuracy"] >= runtime["target_added"] and lost <= MAX_OTHERS_LOSS
            lines += [
                "",
                f"Target: ≥ {runtime['target_added']:.0f} % of the added intents with the "
                f"bundle's rule at ≤ {MAX_OTHERS_LOSS:g} point lost on the others: "
                f"{'met' if met else 'not met'} ({defaults['added_accuracy']:.2f} %, "
                f"{lost:.2f} point lost).",
            ]
        return "\n".join(lines)


SUITE = RuntimeIntentsSuite()
