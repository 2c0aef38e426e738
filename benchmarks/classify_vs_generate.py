"""Suite `classify-vs-generate`: the encoder against the generator alone, on the same test
utterances (the seed's "Classification vs Generation" chart, measured).

    python -m benchmarks classify-vs-generate [--datasets atis snips] [--sample 50]

The encoder answers every test utterance; each generator variant (few-shot generation, few-shot
scoring of the encoder's top-3 intents, the fine-tuned model) answers a seeded sample, because one
generation takes seconds on CPU. The encoder is also scored on that same sample, so the columns
compare like with like. Latency is per utterance at batch 1: encoder with 1 ORT thread, generator
with 1 torch thread (the serving defaults' split of a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from benchmarks import generation as gen
from benchmarks.load.meta import run_meta
from benchmarks.suite import Suite, datasets_in, save_figure, write_csv
from export.scoring import pct_text

METRICS = ("intent_acc", "slot_f1", "sentence_acc")
QUICK_SAMPLE = 3


class ClassifyVsGenerateSuite(Suite):
    name = "classify-vs-generate"
    help = "encoder vs generator alone on the same test utterances (generator: seeded sample)"
    in_default_run = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sample", type=int, default=50, help="generator utterances")
        gen.add_generator_arguments(parser)

    def skip_reason(self, args: argparse.Namespace, out_dir: Path) -> str | None:
        return gen.missing_bundles(args)

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        size = QUICK_SAMPLE if args.quick else args.sample
        datasets = {}
        for dataset in args.datasets[:1] if args.quick else args.datasets:
            datasets[dataset] = compare(
                dataset, args.bundles / dataset, args, size, gen.cache_dir(args, out_dir)
            )
        report = gen.merge_report(
            out_dir / "classify_vs_generate.json",
            datasets,
            {**run_meta(), "sample": size, "seed": args.seed},
        )
        write_csv(out_dir / "classify_vs_generate.csv", csv_rows(report))
        save_figure(chart(report), out_dir / "classify_vs_generate.png")
        return report

    def load_result(self, results: Path) -> dict | None:
        path = results / "classify_vs_generate.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def summary(self, result: dict) -> str:
        return table(result)


def compare(
    dataset: str, bundle_dir: Path, args: argparse.Namespace, size: int, cache: Path
) -> dict:
    examples = gen.load_split(dataset, "test")
    if args.quick:
        examples = examples[:20]
    engine = gen.open_engine(bundle_dir)
    known = engine.bundle.labels.intents
    enc, frames = gen.encoder_answers(engine, examples)
    picked = gen.sample_indices(len(examples), size, args.seed)
    sample = [examples[i] for i in picked]
    result = {
        "test_utterances": len(examples),
        "sample_size": len(picked),
        "encoder_full": {
            **gen.headline(
                gen.score(examples, [a.intent for a in enc], [a.tags for a in enc], known)
            ),
            **gen.latency([a.ms for a in enc]),
        },
        "encoder": {
            **gen.headline(
                gen.score(
                    sample, [enc[i].intent for i in picked], [enc[i].tags for i in picked], known
                )
            ),
            **gen.latency([enc[i].ms for i in picked]),
        },
    }
    for variant in gen.chosen_variants(args):
        name = variant.name
        if reason := variant.missing(dataset):
            result[name] = {"skipped": reason}
            print(f"[classify-vs-generate] {dataset} {name}: skipped, {reason}")
            continue
        answers = gen.GeneratorRunner(variant, dataset, bundle_dir, engine, cache).answers(
            "test", examples, frames, picked
        )
        ordered = [answers[i] for i in picked]
        intents, tags = gen.generator_frames(sample, ordered)
        metrics = gen.score(sample, intents, tags, known)
        reasons: dict[str, int] = {}
        for a in ordered:
            if not a.valid:
                reasons[a.reason] = reasons.get(a.reason, 0) + 1
        result[name] = {
            **gen.headline(metrics),
            **gen.latency([a.ms for a in ordered]),
            "valid_rate": round(100 * sum(a.valid for a in ordered) / len(ordered), 2),
            "invalid_reasons": reasons,
            "label": variant.label,
        }
    return result


def systems(entry: dict) -> list[str]:
    return [k for k in ("encoder", *gen.VARIANTS) if k in entry and "skipped" not in entry[k]]


def csv_rows(report: dict) -> list[dict]:
    keys = ("n", *METRICS, "mean_ms", "p50_ms", "p99_ms", "utterances_per_s")
    return [
        {"dataset": d, "system": s, **{k: report[d][s].get(k, "") for k in keys}}
        for d in datasets_in(report)
        for s in ["encoder_full", *systems(report[d])]
    ]


def chart(report: dict) -> Figure:
    """Per dataset: accuracy bars (left) and p50 latency on a log scale (right)."""
    names = datasets_in(report)
    fig = Figure(figsize=(11, 4 * len(names)))
    for row, d in enumerate(names):
        entry = report[d]
        shown = systems(entry)
        ax = fig.add_subplot(len(names), 2, 2 * row + 1)
        width = 0.8 / len(shown)
        x = np.arange(len(METRICS))
        for j, s in enumerate(shown):
            values = [np.nan if entry[s][m] is None else entry[s][m] for m in METRICS]  # no slots
            bars = ax.bar(x + (j - (len(shown) - 1) / 2) * width, values, width, label=s)
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
        ax.set_xticks(x, ["intent acc", "slot F1", "sentence acc"])
        ax.set_ylim(0, 110)
        ax.set_ylabel("% on the sample")
        ax.set_title(f"{d.upper()} test, sample of {entry['sample_size']}")
        ax.legend(fontsize=7, loc="lower left")
        ax = fig.add_subplot(len(names), 2, 2 * row + 2)
        p50 = [entry[s]["p50_ms"] for s in shown]
        bars = ax.bar(shown, p50, color=[f"C{j}" for j in range(len(shown))])
        ax.bar_label(bars, fmt="%.1f ms", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("p50 ms per utterance (log)")
        ax.set_title(f"{d.upper()}: latency, batch 1, 1 thread")
        ax.tick_params(axis="x", labelsize=7)
    return fig


def table(report: dict) -> str:
    rows = [
        "| dataset | system | n | intent acc | slot F1 | sentence acc | p50 ms | p99 ms | utt/s "
        "| valid answers |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in datasets_in(report):
        entry = report[d]
        for s in ["encoder_full", *systems(entry)]:
            m = entry[s]
            name = {"encoder_full": "encoder (whole test split)", "encoder": "encoder"}.get(
                s, m.get("label", s)
            )
            valid = f"{m['valid_rate']:.0f} %" if "valid_rate" in m else ""
            rows.append(
                f"| {d} | {name} | {m['n']} | {m['intent_acc']:.2f} | {pct_text(m['slot_f1'])} | "
                f"{m['sentence_acc']:.2f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
                f"{m['utterances_per_s']:.1f} | {valid} |"
            )
        for s in gen.VARIANTS:
            if "skipped" in entry.get(s, {}):
                rows.append(f"| {d} | {s} | skipped: {entry[s]['skipped']} | | | | | | | |")
    meta = report.get("meta", {})
    rows += [
        "",
        f"Test split; generators on a seeded sample (seed {meta.get('seed')}), the encoder on the "
        f"same sample and on the whole split. Commit {meta.get('git_commit', '?')[:12]}, "
        f"{meta.get('cpu', '?')}, {meta.get('cores', '?')} cores.",
    ]
    return "\n".join(rows)


SUITE = ClassifyVsGenerateSuite()
