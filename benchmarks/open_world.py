"""Suite `open-world`: out-of-scope detection on CLINC150, as served.

    python -m benchmarks open-world [--bundle bundles/clinc150] [--data clinc150]

Runs the bundle's served graph through the engine (int8 one utterance at a time, as served) on
train, dev and test; fits every out-of-scope method's reference data on the in-scope training
utterances and its threshold on dev with the bundle's in-scope budget (`export.out_of_scope`,
the rule the exporter ran), then scores each method on test: in-scope accuracy (right intent and
not flagged, over the in-scope utterances), out-of-scope recall, precision and F1, and the
engine's per-utterance latency with that detector (p50/p99 over a sample, batch 1). The row of
the method the bundle ships is `default`. Writes open_world.json / .csv and a plot of in-scope
accuracy against out-of-scope recall as each method's threshold moves (test), with the dev-chosen
points and the published BERT figures marked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from benchmarks.generation import CACHE_DIR
from benchmarks.load.measure import latency_stats
from benchmarks.load.meta import run_meta
from benchmarks.scope_routing import (
    SCOPE_GENERATORS,
    ScopeGenerator,
    ScopeRunner,
    choose_band,
    encoder_pass,
    nearest,
    pct_of,
    routed_metrics,
)
from benchmarks.suite import BundleSuite, save_figure, write_csv, write_json
from export.data import Example, read_dataset
from export.fetch import resolve_dataset
from export.out_of_scope import DEFAULT_LABEL, GraphOutputs, choose, oos_metrics
from export.scoring import pct_text
from service.contract.bundle import OutOfScopeRecord
from service.contract.oos import Detector, Reference
from service.contract.text import softmax
from service.runtime import Engine
from service.settings import EngineSettings

PUBLISHED = {  # ../shared/data/README.md: Larson et al. 2019, Table 2, full data
    "BERT + oos class (published)": (40.3, 96.9),
    "BERT + threshold (published)": (52.3, 96.2),
}
TARGET = {"oos_recall": 75.0, "in_scope_accuracy": 96.0}
CURVE_POINTS = 60
QUICK_LATENCY_SAMPLE = 20


def engine_outputs(engine: Engine, texts: list[str], batch_size: int = 64) -> GraphOutputs:
    """Calibrated probabilities and embeddings exactly as the engine computes them."""
    probabilities, embeddings = [], []
    for i in range(0, len(texts), batch_size):
        raw = engine.infer(engine.encode(texts[i : i + batch_size]))
        logits = raw.intent_logits.astype(np.float64)  # (B, I)
        probabilities.append(softmax(logits, engine.bundle.config.temperature))
        embeddings.append(raw.embedding)
    return GraphOutputs(np.concatenate(probabilities), np.concatenate(embeddings))


def exporter_choice(
    engine: Engine,
    splits: dict[str, list[Example]],
    outputs: dict[str, GraphOutputs],
    label: str,
    budget: float,
) -> tuple[OutOfScopeRecord, dict[str, Reference]]:
    """What the exporter's rule chooses for this bundle (every method on dev at its budget
    threshold), from the train and dev outputs of its graph as served."""
    return choose(
        outputs["dev"],
        [ex.intent for ex in splits["dev"]],
        outputs["train"],
        [ex.intent for ex in splits["train"]],
        list(engine.bundle.labels.intents),
        label,
        budget,
        None,
    )


def detection_latency(engine: Engine, detector: Detector, texts: list[str]) -> dict[str, float]:
    """Per-utterance latency of the engine (tokenise, infer, decode with `detector`), batch 1."""
    engine.open_world.detector = detector
    engine.parse(texts[:5])  # warm
    seconds = []
    for text in texts:
        start = time.perf_counter()
        engine.parse([text])
        seconds.append(time.perf_counter() - start)
    return latency_stats(seconds, 1)


def curve(detector: Detector, out: GraphOutputs, predicted, gold_oos, gold) -> list[dict]:
    """In-scope accuracy and OOS recall as the threshold sweeps the test scores' quantiles."""
    _, scores = detector.decide(out.probabilities, out.embeddings)
    points = []
    for threshold in np.quantile(scores, np.linspace(0, 1, CURVE_POINTS)):
        flags, _ = dataclasses.replace(detector, threshold=float(threshold)).decide(
            out.probabilities, out.embeddings
        )
        m = oos_metrics(flags, predicted, gold_oos, gold)
        points.append({"oos_recall": m["oos_recall"], "in_scope_accuracy": m["in_scope_accuracy"]})
    return points


class OpenWorldSuite(BundleSuite):
    name = "open-world"
    help = "CLINC150 out-of-scope detection: every encoder detector at its dev threshold"
    in_default_run = False

    def load_result(self, results: Path) -> dict | None:
        path = results / "open_world.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", default="clinc150")
        parser.add_argument("--bundle", type=Path, help="default: bundles/DATA")
        parser.add_argument("--oos-label", default=DEFAULT_LABEL)
        parser.add_argument(
            "--latency-sample", type=int, default=1000, help="test utterances timed per method"
        )
        parser.add_argument(
            "--max-routed",
            type=float,
            default=0.15,
            help="share of each split nearest the threshold the generator answers (cached)",
        )
        parser.add_argument(
            "--scope-generators",
            nargs="+",
            default=["few_shot", "fine_tuned"],
            choices=SCOPE_GENERATORS,
            help="generators deciding scope near the threshold (one routed row each)",
        )
        parser.add_argument(
            "--lm", default="", help="model of the few-shot scope generator (default: SmolLM2)"
        )

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        meta = run_meta()
        bundle_dir = self.bundle(args)
        engine = Engine(bundle_dir, settings=EngineSettings())
        config = engine.bundle.config
        dataset = read_dataset(resolve_dataset(args.data))
        splits: dict[str, list[Example]] = dataset.splits
        outputs = {s: engine_outputs(engine, [ex.text for ex in splits[s]]) for s in splits}
        intents = list(engine.bundle.labels.intents)
        budget = config.out_of_scope.in_scope_budget if config.out_of_scope else 1.0
        record, references = exporter_choice(engine, splits, outputs, args.oos_label, budget)
        shipped = config.out_of_scope.method if config.out_of_scope else "off"
        gold = [ex.intent for ex in splits["test"]]
        gold_oos = np.array([g == args.oos_label for g in gold])
        test = outputs["test"]
        in_scope = np.array([i != args.oos_label for i in intents])
        predicted = [
            intents[i] if in_scope[i] else args.oos_label for i in test.probabilities.argmax(1)
        ]
        sample_size = QUICK_LATENCY_SAMPLE if args.quick else args.latency_sample
        sample = [ex.text for ex in splits["test"]][:: max(1, len(gold) // sample_size)]
        rows, curves = [], {}
        for method, dev in record.dev.items():
            detector = Detector(method, dev.threshold, in_scope, references[method])
            flags, _ = detector.decide(test.probabilities, test.embeddings)
            latency = detection_latency(engine, detector, sample)
            rows.append(
                {
                    "method": method,
                    "threshold": dev.threshold,
                    **oos_metrics(flags, predicted, gold_oos, gold),
                    "p50_ms": latency["p50_ms"],
                    "p99_ms": latency["p99_ms"],
                    "routed_fraction": 0.0,
                    "default": method == shipped,
                    "dev": dev.model_dump(),
                }
            )
            if dev.threshold is not None:
                curves[method] = curve(detector, test, predicted, gold_oos, gold)
        skipped = []
        if config.out_of_scope and config.out_of_scope.threshold:
            for name in args.scope_generators:
                generator = SCOPE_GENERATORS[name]
                reason = generator.missing(config.dataset)
                if reason:
                    skipped.append({"generator": name, "for": "out of scope", "reason": reason})
                    continue
                rows.append(self.routed_row(args, bundle_dir, splits, out_dir, shipped, generator))
        result = {
            "meta": meta,
            config.dataset: {
                "oos": rows,
                "curves": curves,
                "bundle": {
                    "path": str(bundle_dir),
                    "served_variant": engine.variant,
                    "graph": config.variants[engine.variant].graph,
                    "out_of_scope": config.out_of_scope.model_dump()
                    if config.out_of_scope
                    else None,
                    "best_epoch": config.train.best_epoch,
                    "dev": config.train.dev,
                },
                "in_scope_budget": budget,
                "test_sizes": {"in_scope": int((~gold_oos).sum()), "oos": int(gold_oos.sum())},
                "latency_sample": len(sample),
                "targets": TARGET,
                "skipped_generators": skipped,
            },
        }
        write_json(out_dir / "open_world.json", result)
        columns = ["method", "threshold", "in_scope_accuracy", "oos_recall", "oos_precision"]
        columns += ["oos_f1", "p50_ms", "p99_ms", "routed_fraction", "default"]
        write_csv(out_dir / "open_world.csv", [{k: r[k] for k in columns} for r in rows])
        save_figure(self.chart(result[config.dataset]), out_dir / "open_world.png")
        return result

    @staticmethod
    def routed_row(
        args: argparse.Namespace,
        bundle_dir: Path,
        splits: dict[str, list[Example]],
        out_dir: Path,
        shipped: str,
        generator: ScopeGenerator,
    ) -> dict:
        """The shipped detector with `generator` deciding scope near its threshold."""
        engine = Engine(bundle_dir, settings=EngineSettings(intra_op_threads=1))
        threshold = engine.open_world.detector.threshold
        share = 0.3 if args.quick else args.max_routed
        texts = {s: [ex.text for ex in splits[s]] for s in ("dev", "test")}
        gold = {s: [ex.intent for ex in splits[s]] for s in ("dev", "test")}
        frames, encoder_ms = {}, {}
        for split in ("dev", "test"):
            frames[split], encoder_ms[split] = encoder_pass(engine, texts[split])
        cache = out_dir / "generator-cache" if args.quick else CACHE_DIR
        lm = generator.model_path(engine.bundle.config.dataset) or args.lm
        runner = ScopeRunner(engine, bundle_dir, generator, lm, cache)
        dev_answers = runner.answers("dev", frames["dev"], nearest(frames["dev"], threshold, share))
        choice = choose_band(
            frames["dev"],
            dev_answers,
            threshold,
            gold["dev"],
            args.oos_label,
            engine.open_world.oos_intent,
        )
        band = choice["best"]["band"] if choice["best"] else 0.0
        near = [
            i for i, f in enumerate(frames["test"]) if abs(f.in_scope_score - threshold) <= band
        ]
        test_answers = runner.answers("test", frames["test"], near)
        metrics, routed = routed_metrics(
            frames["test"],
            test_answers,
            band,
            threshold,
            gold["test"],
            args.oos_label,
            engine.open_world.oos_intent,
        )
        total_ms = [
            ms + (test_answers[i].ms if routed[i] else 0.0)
            for i, ms in enumerate(encoder_ms["test"])
        ]
        latency = latency_stats(np.array(total_ms) / 1000, 1)
        return {
            "method": f"{shipped} + generator ({generator.label})",
            "threshold": threshold,
            **metrics,
            "p50_ms": latency["p50_ms"],
            "p99_ms": latency["p99_ms"],
            "routed_fraction": pct_of(routed),
            "default": False,
            "band": band,
            "encoder_only_p50_ms": latency_stats(np.array(encoder_ms["test"]) / 1000, 1)["p50_ms"],
            "generator_failures": sum(1 for i in near if test_answers[i].reason),
            "dev": {
                "band_chosen": band if choice["beats_encoder_only"] else 0.0,
                "beats_encoder_only": choice["beats_encoder_only"],
                "encoder_only": choice["encoder_only"],
                "best": choice["best"],
                "tried": choice["tried"],
            },
        }

    @staticmethod
    def chart(report: dict) -> Figure:
        fig = Figure(figsize=(7, 5))
        ax = fig.add_subplot(1, 1, 1)
        for method, points in report["curves"].items():
            line = ax.plot(
                [p["oos_recall"] for p in points],
                [p["in_scope_accuracy"] for p in points],
                label=method,
            )
            row = next(r for r in report["oos"] if r["method"] == method)
            marker = "*" if row["default"] else "o"
            ax.plot(row["oos_recall"], row["in_scope_accuracy"], marker, color=line[0].get_color())
        for row in report["oos"]:
            if row["method"] not in report["curves"]:
                ax.plot(row["oos_recall"], row["in_scope_accuracy"], "s", label=row["method"])
        for name, (recall, accuracy) in PUBLISHED.items():
            ax.plot(recall, accuracy, "x", color="black")
            ax.annotate(
                name, (recall, accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        ax.axhline(TARGET["in_scope_accuracy"], color="grey", lw=0.5, ls="--")
        ax.axvline(TARGET["oos_recall"], color="grey", lw=0.5, ls="--")
        ax.set_xlabel("out-of-scope recall on test (%)")
        ax.set_ylabel("in-scope accuracy on test (%)")
        ax.set_ylim(85, 100)
        ax.set_title("CLINC150: markers = threshold chosen on dev (* = shipped)")
        ax.legend(fontsize=8, loc="lower left")
        return fig

    def summary(self, result: dict) -> str:
        lines = []
        for dataset, report in result.items():
            if dataset == "meta":
                continue
            lines += [
                f"**{dataset}** (test: {report['test_sizes']['in_scope']} in-scope, "
                f"{report['test_sizes']['oos']} out-of-scope; thresholds chosen on dev within "
                f"{report['in_scope_budget']} point of in-scope accuracy; served "
                f"{report['bundle']['served_variant']}, latency over {report['latency_sample']} "
                "utterances, batch 1):",
                "",
                "| method | in-scope acc | OOS recall | OOS precision | OOS F1 | p50 ms | p99 ms "
                "| routed | shipped |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for r in report["oos"]:
                lines.append(
                    f"| {r['method']} | {r['in_scope_accuracy']:.2f} | "
                    f"{pct_text(r['oos_recall'])} | {pct_text(r['oos_precision'])} | "
                    f"{pct_text(r['oos_f1'])} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                    f"{r['routed_fraction']:.1f} % | {'yes' if r['default'] else ''} |"
                )
            for s in report.get("skipped_generators", []):
                lines.append(
                    f"\nNot measured ({s['for']}): {s['generator']} generator: {s['reason']}."
                )
            lines += [
                "",
                "Published (Larson et al. 2019, BERT): oos class 96.9 / 40.3, threshold 96.2 / "
                f"52.3 (in-scope / recall). Target: recall ≥ {TARGET['oos_recall']:.0f} % at "
                f"in-scope ≥ {TARGET['in_scope_accuracy']:.0f} %.",
            ]
        return "\n".join(lines)


SUITE = OpenWorldSuite()
