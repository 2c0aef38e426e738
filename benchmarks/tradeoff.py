"""Suite `tradeoff`: route the encoder's least confident utterances to a generator and measure
accuracy against latency as the confidence threshold moves; pick the threshold on dev.

    python -m benchmarks tradeoff [--datasets atis snips] [--max-routed 0.06]

For each dataset, split (dev, test) and generator variant, the generator answers the utterances
whose calibrated confidence is lowest, up to --max-routed of the split (each answer takes seconds
on CPU; a threshold that routes more than half the traffic fails the latency rule anyway, since the
median request would then wait for the generator). At threshold τ an utterance with confidence
< τ gets the generator's answer when it is valid, else the encoder's; its latency is the encoder's
plus, when routed, the generator path's. Thresholds beyond the measured range are not reported.

The dev split picks, per dataset, the (variant, τ) with the best sentence accuracy whose p50
stays within 10 % of encoder-only; when nothing beats encoder-only on dev, τ = 0 (never route),
so enabling the router cannot make dev accuracy worse. Test reports what that choice gives.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from benchmarks.generation import (
    EncoderAnswer,
    GeneratorAnswer,
    GeneratorRunner,
    add_generator_arguments,
    cache_dir,
    chosen_variants,
    encoder_answers,
    generator_frames,
    headline,
    latency,
    load_split,
    merge_report,
    missing_bundles,
    open_engine,
    sample_indices,
    score,
)
from benchmarks.load.meta import run_meta
from benchmarks.suite import Suite, datasets_in, save_figure, write_csv
from export.data import Example
from export.scoring import pct_text

P50_BUDGET = 1.10
GRID = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)
QUICK_ROUTED = 3


class TradeoffSuite(Suite):
    name = "tradeoff"
    help = "confidence-threshold sweep of encoder + generator routing; threshold chosen on dev"
    in_default_run = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--max-routed", type=float, default=0.06, help="fraction of a split answered"
        )
        parser.add_argument("--sample", type=int, default=50, help="generator_only sample")
        add_generator_arguments(parser)

    def skip_reason(self, args: argparse.Namespace, out_dir: Path) -> str | None:
        return missing_bundles(args)

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        results = {}
        for dataset in args.datasets[:1] if args.quick else args.datasets:
            results[dataset] = sweep_dataset(
                dataset, args.bundles / dataset, args, cache_dir(args, out_dir)
            )
        meta = {
            **run_meta(),
            "max_routed": args.max_routed,
            "p50_budget": P50_BUDGET,
            "generator_only_sample": args.sample,
            "seed": args.seed,
        }
        report = merge_report(out_dir / "tradeoff.json", results, meta)
        write_csv(out_dir / "tradeoff.csv", csv_rows(report))
        save_figure(chart(report), out_dir / "tradeoff.png")
        return report

    def summary(self, result: dict) -> str:
        return table(result)


class Split:
    """One split's encoder answers and, per variant, the generator's on the routed utterances."""

    def __init__(self, examples: list[Example], enc: list[EncoderAnswer], known: tuple) -> None:
        self.examples, self.enc, self.known = examples, enc, known
        self.order = np.argsort([a.confidence for a in enc], kind="stable")  # least sure first
        self.gen: dict[str, dict[int, GeneratorAnswer]] = {}

    def confidence(self, i: int) -> float:
        return self.enc[i].confidence

    def evaluate(self, variant: str | None, threshold: float) -> dict:
        """Metrics and latency with routing at `threshold` (variant None: encoder only)."""
        answers = self.gen.get(variant, {}) if variant else {}
        intents, tags, ms, routed = [], [], [], 0
        for i, enc in enumerate(self.enc):
            use, cost = enc, enc.ms
            if variant and enc.confidence < threshold:
                gen = answers[i]
                routed += 1
                cost += gen.ms
                if gen.valid:
                    use = gen  # type: ignore[assignment]
            intents.append(use.intent)
            tags.append(use.tags)
            ms.append(cost)
        metrics = score(self.examples, intents, tags, self.known)  # type: ignore[arg-type]
        return {
            "threshold": threshold,
            "fallback_rate": round(100 * routed / len(self.enc), 2),
            **headline(metrics),
            **latency(ms),
        }

    def measurable(self, variant: str, threshold: float) -> bool:
        answered = self.gen.get(variant, {})
        return all(i in answered for i, a in enumerate(self.enc) if a.confidence < threshold)


def sweep_dataset(dataset: str, bundle_dir: Path, args: argparse.Namespace, cache: Path) -> dict:
    engine = open_engine(bundle_dir)
    splits: dict[str, Split] = {}
    frames = {}
    for name in ("dev", "test"):
        examples = load_split(dataset, name)
        if args.quick:
            examples = examples[:20]
        enc, frames[name] = encoder_answers(engine, examples)
        splits[name] = Split(examples, enc, engine.bundle.labels.intents)
    result: dict = {
        # Test metrics flat (the shape the issue asks for), dev nested.
        "encoder_only": {
            **splits["test"].evaluate(None, 0.0),
            "dev": splits["dev"].evaluate(None, 0.0),
        },
        "variants": {},
    }
    runners = {}
    for variant in chosen_variants(args):
        name = variant.name
        if reason := variant.missing(dataset):
            result["variants"][name] = {"skipped": reason}
            continue
        runners[name] = GeneratorRunner(variant, dataset, bundle_dir, engine, cache)
        for split_name, split in splits.items():
            cap = QUICK_ROUTED if args.quick else round(args.max_routed * len(split.enc))
            routed = [int(i) for i in split.order[:cap]]
            split.gen[name] = runners[name].answers(
                split_name, split.examples, frames[split_name], routed
            )
    for name in runners:
        result["variants"][name] = variant_sweep(splits, name)
    choice = choose(result["variants"], result["encoder_only"]["dev"])
    result["chosen"] = choice
    if choice["variant"]:
        runner = runners[choice["variant"]]
        test = splits["test"]
        needed = [i for i, a in enumerate(test.enc) if a.confidence < choice["threshold"]]
        test.gen[choice["variant"]] |= runner.answers("test", test.examples, frames["test"], needed)
        routed_test = test.evaluate(choice["variant"], choice["threshold"])
    else:
        routed_test = splits["test"].evaluate(None, 0.0)
    enc_test = result["encoder_only"]
    result["routed"] = {**routed_test, "variant": choice["variant"]}
    result["routed"]["p50_vs_encoder"] = round(routed_test["p50_ms"] / enc_test["p50_ms"], 3)
    result["generator_only"] = generator_only(
        choice["variant"] or "few_shot", runners, splits["test"], frames["test"], args
    )
    result["where_it_fails"] = per_intent(splits["test"], runners)
    return result


def variant_sweep(splits: dict[str, Split], variant: str) -> dict:
    """Per split: the fixed grid (where measurable) and every distinct routed confidence."""
    out = {}
    for name, split in splits.items():
        answered = sorted(split.gen[variant])
        edges = sorted({split.confidence(i) for i in answered})
        # τ just above each answered confidence routes exactly the utterances up to it.
        candidates = [0.0, *(float(np.nextafter(c, 1.0)) for c in edges)]
        points = sorted(
            {t for t in (*GRID, *candidates) if split.measurable(variant, t)},
        )
        out[name] = [split.evaluate(variant, t) for t in points]
    return out


def choose(variants: dict, encoder_dev: dict) -> dict:
    """Best dev sentence accuracy within the p50 budget; ties go to the lower fallback rate."""
    best = {"variant": None, "threshold": 0.0, "dev": encoder_dev}
    budget = P50_BUDGET * encoder_dev["p50_ms"]
    for name, sweep in variants.items():
        for point in sweep.get("dev", []):
            if point["p50_ms"] > budget:
                continue
            key = (point["sentence_acc"], -point["fallback_rate"])
            if key > (best["dev"]["sentence_acc"], -best["dev"]["fallback_rate"]):
                best = {"variant": name, "threshold": point["threshold"], "dev": point}
    return best


def generator_only(
    variant: str,
    runners: dict[str, GeneratorRunner],
    split: Split,
    frames: list,
    args: argparse.Namespace,
) -> dict:
    """Every utterance to the generator: a seeded sample of the test split (shared with the
    classify-vs-generate suite's cache)."""
    if variant not in runners:
        return {"skipped": "no generator variant ran"}
    size = QUICK_ROUTED if args.quick else args.sample
    picked = sample_indices(len(split.examples), size, args.seed)
    answers = runners[variant].answers("test", split.examples, frames, picked)
    sample = [split.examples[i] for i in picked]
    intents, tags = generator_frames(sample, [answers[i] for i in picked])
    return {
        "variant": variant,
        **headline(score(sample, intents, tags, split.known)),
        **latency([answers[i].ms + split.enc[i].ms for i in picked]),
    }


def per_intent(split: Split, runners: dict[str, GeneratorRunner]) -> dict:
    """On the routed test utterances: per gold intent, how often each system got it right."""
    out = {}
    for name in runners:
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for i, gen in split.gen[name].items():
            gold = split.examples[i].intent
            counts[gold][0] += 1
            counts[gold][1] += split.enc[i].intent == gold
            counts[gold][2] += gen.valid and gen.intent == gold
        out[name] = {
            gold: {"n": n, "encoder_correct": e, "generator_correct": g}
            for gold, (n, e, g) in sorted(counts.items(), key=lambda kv: -kv[1][0])
        }
    return out


def csv_rows(report: dict) -> list[dict]:
    rows = []
    for d in datasets_in(report):
        for variant, sweep in report[d]["variants"].items():
            for split in ("dev", "test"):
                rows += [
                    {"dataset": d, "variant": variant, "split": split, **p}
                    for p in sweep.get(split, [])
                ]
    return rows


def chart(report: dict) -> Figure:
    """Test sentence accuracy against mean latency per variant; the dev-chosen point marked."""
    names = datasets_in(report)
    fig = Figure(figsize=(6 * len(names), 4.5))
    for k, d in enumerate(names):
        ax = fig.add_subplot(1, len(names), k + 1)
        entry = report[d]
        enc = entry["encoder_only"]
        ax.scatter([enc["mean_ms"]], [enc["sentence_acc"]], color="black", zorder=3)
        ax.annotate("encoder only", (enc["mean_ms"], enc["sentence_acc"]), fontsize=7)
        for j, (variant, sweep) in enumerate(entry["variants"].items()):
            if "test" not in sweep:
                continue
            xs = [p["mean_ms"] for p in sweep["test"]]
            ys = [p["sentence_acc"] for p in sweep["test"]]
            ax.plot(xs, ys, marker=".", color=f"C{j}", label=f"{variant} (test)")
        routed = entry["routed"]
        ax.scatter(
            [routed["mean_ms"]],
            [routed["sentence_acc"]],
            marker="*",
            s=160,
            color="red",
            zorder=4,
            label=f"dev-chosen: {routed['variant'] or 'never route'} τ={routed['threshold']:.3g}",
        )
        ax.set_xscale("log")
        ax.set_xlabel("mean latency per utterance, ms (log)")
        ax.set_ylabel("sentence accuracy, % (test)")
        ax.set_title(f"{d.upper()}: routing frontier")
        ax.legend(fontsize=7)
    return fig


def fmt(point: dict) -> str:
    return (
        f"{point['fallback_rate']:.1f} % | {point['intent_acc']:.2f} | "
        f"{pct_text(point['slot_f1'])} | {point['sentence_acc']:.2f} | "
        f"{point['p50_ms']:.2f} | {point['p99_ms']:.1f} | "
        f"{point['mean_ms']:.1f}"
    )


def table(report: dict) -> str:
    rows = [
        "| dataset | split | routing | fallback | intent acc | slot F1 | sentence acc | p50 ms "
        "| p99 ms | mean ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in datasets_in(report):
        entry = report[d]
        for split in ("dev", "test"):
            encoder = entry["encoder_only"] if split == "test" else entry["encoder_only"]["dev"]
            rows.append(f"| {d} | {split} | encoder only | {fmt(encoder)} |")
            for variant, sweep in entry["variants"].items():
                if split not in sweep:
                    continue
                best = max(sweep[split], key=lambda p: (p["sentence_acc"], -p["fallback_rate"]))
                most = sweep[split][-1]
                hindsight = f"{variant}, best τ={best['threshold']:.4g} (hindsight)"
                rows.append(f"| {d} | {split} | {hindsight} | {fmt(best)} |")
                most_routed = f"{variant}, τ={most['threshold']:.4g} (most routed)"
                rows.append(f"| {d} | {split} | {most_routed} | {fmt(most)} |")
        routed = entry["routed"]
        label = (
            f"{routed['variant']}, τ={routed['threshold']:.4g}"
            if routed["variant"]
            else "never route (τ=0)"
        )
        rows.append(f"| {d} | test | **dev-chosen: {label}** | {fmt(routed)} |")
        gen = entry["generator_only"]
        if "skipped" not in gen:
            rows.append(
                f"| {d} | test sample of {gen['n']} | generator only ({gen['variant']}) | 100 % | "
                f"{gen['intent_acc']:.2f} | {pct_text(gen['slot_f1'])} | "
                f"{gen['sentence_acc']:.2f} | "
                f"{gen['p50_ms']:.0f} | {gen['p99_ms']:.0f} | {gen['mean_ms']:.0f} |"
            )
    rows += ["", *failure_table(report)]
    meta = report.get("meta", {})
    rows += [
        "",
        f"Generators answer the {100 * meta.get('max_routed', 0):.0f} % least confident utterances "
        f"of each split; the dev choice keeps p50 within {meta.get('p50_budget', 0):.2f}× "
        f"encoder-only. Commit {meta.get('git_commit', '?')[:12]}, {meta.get('cpu', '?')}, "
        f"{meta.get('cores', '?')} cores.",
    ]
    return "\n".join(rows)


def failure_table(report: dict, top: int = 4) -> list[str]:
    """Where the generator loses: the most frequent gold intents among the routed test
    utterances, with how many each system got right."""
    rows = [
        "| dataset | variant | gold intent (routed test utterances) | n | encoder right "
        "| generator right |",
        "|---|---|---|---|---|---|",
    ]
    for d in datasets_in(report):
        for variant, intents in report[d].get("where_it_fails", {}).items():
            for gold, c in list(intents.items())[:top]:
                rows.append(
                    f"| {d} | {variant} | {gold} | {c['n']} | {c['encoder_correct']} | "
                    f"{c['generator_correct']} |"
                )
    return rows


SUITE = TradeoffSuite()
