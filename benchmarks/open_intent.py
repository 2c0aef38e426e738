"""Suite `open-intent`: open intent classification on CLINC150 without out-of-scope data, the
protocol of TEXTOIR / ADB (Zhang et al., AAAI 2021, github thuiar/Adaptive-Decision-Boundary,
its "OOS" dataset), so our rows sit beside the published ones.

    python -m benchmarks open-intent [--runs 0.75:0,1,2 0.5:0 0.25:0] [--epochs 3]

For each run (a known-intent ratio and a seed): round(150 × ratio) of CLINC150's 150 intents are
drawn as *known* (`random.Random(seed)`; ADB draws with numpy, so the draws differ); train and
dev keep only the known intents' utterances (no out-of-scope utterance anywhere before test); a
model is trained on them and exported (`export.onnx`, cached under bundles/open-intent-*), and
the bundle is served by the engine as the server serves it. Test is CLINC150's 4,500 in-scope
test utterances plus all 1,200 of its out-of-scope utterances (train, dev and test), 5,700 as in
ADB's data; every utterance whose intent is not known is the *open* class.

Every detector's reference data comes from the known training utterances and its threshold from
the known dev utterances alone, at the false-rejection budget stated per row (the share of dev
utterances it may flag; `export.out_of_scope.choose`, the exporter's rule): nothing is chosen on
test or with open examples. Metrics as the paper: accuracy over all test utterances (known ones
right and not flagged, open ones flagged), macro F1 over the known classes plus the open class,
open-class F1 and known-class macro F1; mean ± std over the seeds of a ratio. Served outputs are
cached per bundle (build/open-intent/), so rerunning the table costs seconds.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure
from sklearn.metrics import f1_score

from benchmarks.load.meta import run_meta
from benchmarks.suite import Suite, save_figure, write_csv, write_json
from export.fetch import resolve_dataset
from export.onnx import build_bundle
from export.out_of_scope import (
    DEFAULT_BUDGET,
    DEFAULT_FALSE_REJECTION,
    GraphOutputs,
    budget_threshold,
    choose,
)
from export.train import TrainConfig, train
from service.contract.oos import Detector
from service.contract.paths import PROJECT_ROOT
from service.contract.text import softmax
from service.runtime import Engine
from service.settings import EngineSettings

OPEN = "<open>"
OOS_LABEL = "oos"
SPLITS = ("train", "dev", "test")
DEFAULT_RUNS = ("0.75:0,1,2", "0.5:0", "0.25:0")
SOURCE = "ADB README (github thuiar/Adaptive-Decision-Boundary), OOS columns; BERT-base"
PUBLISHED = [  # (known ratio, method, accuracy, macro F1, open F1, known F1), from SOURCE
    (0.25, "MSP", 47.02, 47.62, 50.88, 47.53),
    (0.25, "DeepUnk", 81.43, 71.16, 87.33, 70.73),
    (0.25, "ADB", 87.59, 77.19, 91.84, 76.80),
    (0.5, "MSP", 62.96, 70.41, 57.62, 70.58),
    (0.5, "DeepUnk", 83.35, 82.16, 85.85, 82.11),
    (0.5, "ADB", 86.54, 85.05, 88.65, 85.00),
    (0.75, "MSP", 74.07, 82.38, 59.08, 82.59),
    (0.75, "DeepUnk", 83.71, 86.23, 81.15, 86.27),
    (0.75, "ADB", 86.32, 88.53, 83.92, 88.58),
]
TARGETS = {  # known ratio → metric → at least
    0.75: {"accuracy": 88.0, "macro_f1": 90.0, "open_f1": 85.0},
    0.5: {"accuracy": 86.54, "macro_f1": 85.05},
    0.25: {"accuracy": 87.59, "macro_f1": 77.19},
}
METRICS = ("accuracy", "macro_f1", "open_f1", "known_f1")


def parse_runs(specs: list[str]) -> list[tuple[float, int]]:
    """["0.75:0,1,2", ...] → [(0.75, 0), (0.75, 1), ...]; SystemExit naming a bad item."""
    runs = []
    for spec in specs:
        ratio, _, seeds = spec.partition(":")
        try:
            value = float(ratio)
            parsed = [int(s) for s in seeds.split(",")]
        except ValueError:
            raise SystemExit(f"--runs: {spec!r} is not RATIO:SEED[,SEED...]") from None
        if not 0 < value < 1:
            raise SystemExit(f"--runs: known ratio {value} must lie in (0, 1)")
        runs += [(value, s) for s in parsed]
    return runs


def read_rows(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def known_intents(source: Path, ratio: float, seed: int) -> list[str]:
    intents = sorted({r["intent"] for r in read_rows(source, "train")} - {OOS_LABEL})
    return sorted(random.Random(seed).sample(intents, round(len(intents) * ratio)))


def write_split(source: Path, out: Path, known: list[str]) -> None:
    """The known intents' utterances of every split: what training and export may see (export
    scores its int8 gate on this test split, known intents only)."""
    out.mkdir(parents=True, exist_ok=True)
    kept = set(known)
    for split in SPLITS:
        rows = [r for r in read_rows(source, split) if r["intent"] in kept]
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def open_test(source: Path) -> list[dict]:
    """ADB's test set: the in-scope test utterances and every out-of-scope utterance."""
    rows = [r for r in read_rows(source, "test") if r["intent"] != OOS_LABEL]
    return rows + [r for s in SPLITS for r in read_rows(source, s) if r["intent"] == OOS_LABEL]


def open_metrics(predicted: list[str], gold: list[str], known: list[str]) -> dict[str, float]:
    """Accuracy and the F1s of the paper, in percent; `gold` has OPEN for every unknown."""
    labels = [*known, OPEN]
    f1 = f1_score(gold, predicted, labels=labels, average=None, zero_division=0)  # (K + 1,)
    accuracy = float(np.mean([p == g for p, g in zip(predicted, gold, strict=True)]))
    return {
        "accuracy": round(100 * accuracy, 2),
        "macro_f1": round(100 * float(f1.mean()), 2),
        "open_f1": round(100 * float(f1[-1]), 2),
        "known_f1": round(100 * float(f1[:-1].mean()), 2),
    }


ADDED_INTENTS = 15  # unknown intents added back through the extension file, as runtime-intents
ADDED_EXAMPLES = 5


def candidate_scores(name: str, logits: np.ndarray) -> np.ndarray:
    """(N,) in-scope scores of the measured-only candidates (none of them won a place in the
    service): max-logit and energy (Liu et al. 2020) from the graph's (N, I) logits; an
    ADB-style boundary, the distance to the best intent's centroid over that intent's radius."""
    if name == "max_logit":
        return logits.max(axis=1)
    if name == "energy":
        peak = logits.max(axis=1, keepdims=True)
        return (peak + np.log(np.exp(logits - peak).sum(axis=1, keepdims=True)))[:, 0]
    raise KeyError(name)


def centroid_reference(train: GraphOutputs, gold: list[str], intents: list[str]) -> dict:
    """Per-intent unit centroids (I, H) and radii (I,): the 95th percentile of the training
    utterances' cosine distance to their centroid (ADB learns it; here it is measured)."""
    ids = np.array([intents.index(g) for g in gold])
    x = train.embeddings.astype(np.float64)
    centres = np.stack([x[ids == c].mean(axis=0) for c in range(len(intents))])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    distance = 1 - (x * centres[ids]).sum(axis=1)
    radii = np.array([np.quantile(distance[ids == c], 0.95) for c in range(len(intents))])
    return {"centres": centres, "radii": radii}


def centroid_scores(outputs: GraphOutputs, reference: dict) -> np.ndarray:
    best = outputs.probabilities.argmax(axis=1)  # (N,)
    cosine = (outputs.embeddings * reference["centres"][best]).sum(axis=1)  # (N,)
    return -(1 - cosine) / reference["radii"][best]


class RunOutputs:
    """One bundle's served outputs on the run's train and dev (known intents) and ADB's test,
    plus the shipped answers of every test utterance; cached per bundle identity (the
    runtime-intents figures too)."""

    def __init__(self, path: Path) -> None:
        data = np.load(path, allow_pickle=False)
        self.arrays = {k: data[k] for k in data.files}

    @classmethod
    def compute(cls, engine: Engine, sets: dict[str, list[dict]], path: Path) -> RunOutputs:
        arrays: dict[str, np.ndarray] = {}
        for split, rows in sets.items():
            texts = [r["text"] for r in rows]
            logits, embeddings, intents, flagged = [], [], [], []
            for i in range(0, len(texts), BATCH):
                chunk = texts[i : i + BATCH]
                enc = engine.encode(chunk)
                raw = engine.infer(enc)
                logits.append(raw.intent_logits)
                embeddings.append(raw.embedding)
                if split == "test":  # the shipped answers, decoded as the server decodes
                    frames = engine.decode(chunk, enc, raw)
                    intents += [f.intent for f in frames]
                    flagged += [f.out_of_scope for f in frames]
            arrays[f"{split}_logits"] = np.concatenate(logits)
            arrays[f"{split}_embeddings"] = np.concatenate(embeddings)
            if split == "test":
                arrays["test_intents"] = np.array(intents)
                arrays["test_flagged"] = np.array(flagged)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        return cls(path)

    def graph(self, split: str, temperature: float) -> GraphOutputs:
        logits = self.arrays[f"{split}_logits"].astype(np.float64)
        return GraphOutputs(softmax(logits, temperature), self.arrays[f"{split}_embeddings"])


class OpenIntentSuite(Suite):
    name = "open-intent"
    help = "CLINC150 open intent classification (TEXTOIR/ADB protocol), beside published rows"
    in_default_run = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", default="clinc150", help="CLINC150 name or folder")
        parser.add_argument(
            "--runs",
            nargs="+",
            default=list(DEFAULT_RUNS),
            help="RATIO:SEED[,SEED...] known-intent draws (default: %(default)s)",
        )
        parser.add_argument("--epochs", type=int, default=3)
        parser.add_argument("--threads", type=int, help="torch threads for training")
        parser.add_argument("--encoder", help="encoder to train (default: packaged MiniLM)")
        parser.add_argument(
            "--bundles", type=Path, default=PROJECT_ROOT / "bundles", help="where run bundles go"
        )
        parser.add_argument(
            "--work",
            type=Path,
            default=PROJECT_ROOT / "build" / "open-intent",
            help="data splits, trained models and served-output caches",
        )
        parser.add_argument(
            "--margin-weight",
            type=float,
            default=MARGIN_WEIGHT,
            help="the training's large-margin loss (export.train --margin-weight)",
        )
        parser.add_argument(
            "--budgets",
            nargs="+",
            type=float,
            default=[DEFAULT_BUDGET, DEFAULT_FALSE_REJECTION],
            help="false-rejection budgets (%% of known dev utterances flagged) per detector",
        )

    def ensure_bundle(self, args: argparse.Namespace, source: Path, ratio: float, seed: int):
        """The run's bundle, trained and exported with --open-world first when missing."""
        tag = f"{round(100 * ratio)}-s{seed}" + (
            f"-lmcl{args.margin_weight:g}" if args.margin_weight else ""
        )
        bundle = args.bundles / f"open-intent-{tag}"
        known = known_intents(source, ratio, seed)
        if not (bundle / "config.json").is_file():
            data = args.work / f"data-{tag}"
            model = args.work / f"model-{tag}"
            write_split(source, data, known)
            if not (model / "config.json").is_file():  # trained models are cached in --work
                train(
                    TrainConfig(
                        data=str(data),
                        out=str(model),
                        epochs=args.epochs,
                        seed=seed,
                        threads=args.threads,
                        encoder=args.encoder,
                        margin_weight=args.margin_weight,
                    )
                )
            build_bundle(model, bundle, str(data), oos={"open_world": DEFAULT_FALSE_REJECTION})
        return bundle, known

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        meta = run_meta()
        source = resolve_dataset(args.data)
        test_rows = open_test(source)
        per_run, runtime = [], []
        for ratio, seed in parse_runs(args.runs):
            bundle_dir, known = self.ensure_bundle(args, source, ratio, seed)
            rows, added = self.measure_run(args, source, bundle_dir, known, test_rows)
            per_run += [{"known_ratio": ratio, "seed": seed, **r} for r in rows]
            runtime.append({"known_ratio": ratio, "seed": seed, **added})
        rows = aggregate(per_run) + published_rows()
        result = {
            "meta": meta,
            "rows": rows,
            "per_run": per_run,
            "runtime_intents": runtime,
            "targets": {str(k): v for k, v in TARGETS.items()},
            "protocol": {
                "test": {"known_and_unknown_in_scope": 4500, "out_of_scope": 1200},
                "epochs": args.epochs,
                "margin_weight": args.margin_weight,
                "budgets": args.budgets,
                "shipped": f"--open-world ({DEFAULT_FALSE_REJECTION:g} % false rejections)",
                "published_source": SOURCE,
            },
        }
        write_json(out_dir / "open_intent.json", result)
        write_csv(out_dir / "open_intent.csv", [{k: r[k] for k in CSV_COLUMNS} for r in rows])
        save_figure(chart(rows), out_dir / "open_intent.png")
        return result

    def measure_run(
        self,
        args: argparse.Namespace,
        source: Path,
        bundle_dir: Path,
        known: list[str],
        test_rows: list[dict],
    ) -> tuple[list[dict], dict]:
        engine = Engine(bundle_dir, settings=EngineSettings())
        bundle = engine.bundle
        intents = list(bundle.labels.intents)
        sets = {
            "train": [r for r in read_rows(source, "train") if r["intent"] in set(known)],
            "dev": [r for r in read_rows(source, "dev") if r["intent"] in set(known)],
            "test": test_rows,
        }
        if args.quick:
            sets["test"] = sets["test"][::QUICK_STRIDE]
        quick = "-quick" if args.quick else ""
        cache = args.work / f"outputs-{bundle_dir.name}-{bundle.config_sha256[:12]}{quick}.npz"
        outputs = RunOutputs(cache) if cache.is_file() else RunOutputs.compute(engine, sets, cache)
        temperature = bundle.config.temperature
        train_out, dev_out, test_out = (outputs.graph(s, temperature) for s in SPLITS)
        gold = [r["intent"] if r["intent"] in set(known) else OPEN for r in sets["test"]]
        train_gold = [r["intent"] for r in sets["train"]]
        dev_gold = [r["intent"] for r in sets["dev"]]
        test_best = [intents[i] for i in test_out.probabilities.argmax(axis=1)]
        rows = []
        for budget in args.budgets:
            for method in ("confidence", "knn", "mahalanobis"):
                record, references = choose(
                    dev_out, dev_gold, train_out, train_gold, intents, OOS_LABEL, budget, method
                )
                detector = Detector(
                    method, record.threshold, np.ones(len(intents), bool), references[method]
                )
                flags, _ = detector.decide(test_out.probabilities, test_out.embeddings)
                rows.append(self.row(method, budget, flags, test_best, gold, known))
            dev_right = np.array(
                [
                    intents[i] == g
                    for i, g in zip(dev_out.probabilities.argmax(1), dev_gold, strict=True)
                ]
            )
            centroids = centroid_reference(train_out, train_gold, intents)
            for method in ("max_logit", "energy", "centroid"):
                if method == "centroid":
                    dev_s, test_s = (
                        centroid_scores(dev_out, centroids),
                        centroid_scores(test_out, centroids),
                    )
                else:
                    dev_s = candidate_scores(method, outputs.arrays["dev_logits"])
                    test_s = candidate_scores(method, outputs.arrays["test_logits"])
                threshold = budget_threshold(dev_s, dev_right, len(dev_gold), budget)
                rows.append(self.row(method, budget, test_s < threshold, test_best, gold, known))
        shipped_answers = [
            OPEN if flagged else intent
            for intent, flagged in zip(
                outputs.arrays["test_intents"], outputs.arrays["test_flagged"], strict=True
            )
        ]
        record = bundle.config.out_of_scope
        shipped = {
            "method": f"shipped: {record.method} (--open-world)",
            "budget": record.in_scope_budget,
            "shipped": True,
            **open_metrics(shipped_answers, gold, known),
        }
        runtime_cache = cache.with_suffix(".runtime-intents.json")
        if runtime_cache.is_file():
            added = json.loads(runtime_cache.read_text())
        else:
            added = self.runtime_intents(engine, source, known, sets["test"], gold)
            runtime_cache.write_text(json.dumps(added, indent=1))
        return [shipped, *rows], added

    @staticmethod
    def row(method, budget, flags, best, gold, known) -> dict:
        predicted = [OPEN if f else b for f, b in zip(flags, best, strict=True)]
        return {"method": method, "budget": budget, "shipped": False,
                **open_metrics(predicted, gold, known)}  # fmt: skip

    @staticmethod
    def runtime_intents(
        engine: Engine, source: Path, known: list[str], test: list[dict], gold: list[str]
    ) -> dict:
        """ADDED_INTENTS of the unknown intents added back from ADDED_EXAMPLES training
        utterances each, through the server's loader, with the bundle's rule (chosen at
        export without out-of-scope data): their test utterances must get their intent, the
        known ones keep theirs."""
        unknown = sorted(
            {r["intent"] for r in read_rows(source, "train")} - set(known) - {OOS_LABEL}
        )
        rng = random.Random(SEED)
        added = sorted(rng.sample(unknown, min(ADDED_INTENTS, len(unknown))))
        train_rows = read_rows(source, "train")
        spec = {
            "intents": [
                {
                    "name": name,
                    "description": name.replace("_", " "),
                    "examples": rng.sample(
                        [r["text"] for r in train_rows if r["intent"] == name], ADDED_EXAMPLES
                    ),
                }
                for name in added
            ]
        }
        text = yaml.safe_dump(spec, sort_keys=False)
        texts = [r["text"] for r in test]
        truth = [r["intent"] for r in test]
        before = parse_texts(engine, texts)
        world = engine.open_world
        world.extensions = engine.build_extensions(Path("open-intent-extensions.yaml"), text)
        after = parse_texts(engine, texts)
        world.extensions = None

        def accuracy(frames, mask) -> float:
            ok = [
                f.intent == t and not f.out_of_scope
                for f, t, m in zip(frames, truth, mask, strict=True)
                if m
            ]
            return round(100 * float(np.mean(ok)), 2)

        is_added = [t in added for t in truth]
        is_known = [t in set(known) for t in truth]
        return {
            "added": added,
            "examples_per_intent": ADDED_EXAMPLES,
            "rule": {
                "threshold": world.extension_threshold,
                "margin": world.extension_margin,
                "chosen_by": world.record.extension.chosen_by if world.record.extension else "",
            },
            "added_accuracy": accuracy(after, is_added),
            "known_accuracy_before": accuracy(before, is_known),
            "known_accuracy_after": accuracy(after, is_known),
            "open_metrics_before": open_metrics(
                [OPEN if f.out_of_scope else f.intent for f in before], gold, known
            ),
        }

    def load_result(self, results: Path) -> dict | None:
        path = results / "open_intent.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def summary(self, result: dict) -> str:
        return summary(result)


def parse_texts(engine: Engine, texts: list[str]) -> list:
    return [f for i in range(0, len(texts), BATCH) for f in engine.parse(texts[i : i + BATCH])]


def aggregate(per_run: list[dict]) -> list[dict]:
    """Mean ± std over the seeds of each (known ratio, method, budget)."""
    groups: dict[tuple, list[dict]] = {}
    for r in per_run:
        groups.setdefault((r["known_ratio"], r["method"], r["budget"]), []).append(r)
    rows = []
    for (ratio, method, budget), runs in groups.items():
        row = {
            "dataset": "clinc150",
            "known_ratio": ratio,
            "method": method,
            "budget": budget,
            "shipped": runs[0]["shipped"],
            "seeds": [r["seed"] for r in runs],
            "published": False,
            "source": "",
        }
        for metric in METRICS:
            values = [r[metric] for r in runs]
            row[metric] = round(float(np.mean(values)), 2)
            row[f"{metric}_std"] = round(float(np.std(values)), 2)
        rows.append(row)
    return rows


def published_rows() -> list[dict]:
    return [
        {
            "dataset": "clinc150",
            "known_ratio": ratio,
            "method": f"{method} (published, BERT-base)",
            "budget": None,
            "shipped": False,
            "seeds": [],
            "published": True,
            "source": SOURCE,
            "accuracy": accuracy,
            "macro_f1": macro,
            "open_f1": open_f1,
            "known_f1": known_f1,
            **{f"{m}_std": None for m in METRICS},
        }
        for ratio, method, accuracy, macro, open_f1, known_f1 in PUBLISHED
    ]


def chart(rows: list[dict]) -> Figure:
    """Accuracy and macro F1 by known-intent ratio: our shipped rows (mean ± std) beside the
    published ones."""
    fig = Figure(figsize=(10, 4.5))
    for k, metric in enumerate(("accuracy", "macro_f1")):
        ax = fig.add_subplot(1, 2, k + 1)
        names = sorted({r["method"] for r in rows if r["published"] or r["shipped"]})
        for name in names:
            points = sorted(
                (r for r in rows if r["method"] == name), key=lambda r: r["known_ratio"]
            )
            xs = [100 * r["known_ratio"] for r in points]
            ys = [r[metric] for r in points]
            errors = [r[f"{metric}_std"] or 0.0 for r in points]
            style = "--" if points[0]["published"] else "-"
            ax.errorbar(xs, ys, yerr=errors, fmt=style + "o", capsize=3, label=name)
        ax.set_xlabel("known intents (%)")
        ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
        ax.set_xticks([25, 50, 75])
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle("CLINC150 open intent classification (ADB protocol; ours: MiniLM-L6, 22 M)")
    return fig


def summary(result: dict) -> str:
    protocol = result["protocol"]
    lines = [
        f"Test: {protocol['test']['known_and_unknown_in_scope']} in-scope + "
        f"{protocol['test']['out_of_scope']} out-of-scope utterances; {protocol['epochs']} "
        f"epochs, margin-loss weight {protocol['margin_weight']}; shipped = "
        f"{protocol['shipped']}; budget = % of known dev utterances a threshold may flag. "
        f"Published: {protocol['published_source']}.",
        "",
        "| known | method | budget | seeds | accuracy | macro F1 | open F1 | known F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(row: dict, metric: str) -> str:
        std = row[f"{metric}_std"]
        spread = f" ± {std:.2f}" if std is not None and len(row["seeds"]) > 1 else ""
        return f"{row[metric]:.2f}{spread}"

    order = sorted(
        result["rows"],
        key=lambda r: (-r["known_ratio"], r["published"], not r["shipped"], r["budget"] or 0),
    )
    for r in order:
        name = f"**{r['method']}**" if r["shipped"] else r["method"]
        budget = f"{r['budget']:g} %" if r["budget"] is not None else ""
        lines.append(
            f"| {100 * r['known_ratio']:.0f} % | {name} | {budget} | {len(r['seeds']) or ''} | "
            f"{cell(r, 'accuracy')} | {cell(r, 'macro_f1')} | {cell(r, 'open_f1')} | "
            f"{cell(r, 'known_f1')} |"
        )
    lines += ["", "Targets (shipped rows):"]
    for ratio, targets in result["targets"].items():
        shipped = next(
            (r for r in result["rows"] if r["shipped"] and str(r["known_ratio"]) == ratio), None
        )
        for metric, goal in targets.items():
            got = "not run" if shipped is None else f"{shipped[metric]:.2f}"
            met = shipped is not None and shipped[metric] >= goal
            lines.append(
                f"- {float(ratio) * 100:.0f} % known, {metric} ≥ {goal}: {got} "
                f"({'met' if met else 'not met'})"
            )
    lines += [
        "",
        "Intents added at run time on these splits (15 unknown intents, 5 training utterances "
        "each, the bundle's rule chosen at export without out-of-scope data):",
        "",
        "| known | seed | threshold | margin | added intents | known before | known after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runtime_intents"]:
        lines.append(
            f"| {100 * r['known_ratio']:.0f} % | {r['seed']} | {r['rule']['threshold']:.3f} | "
            f"{r['rule']['margin']:+.3f} | {r['added_accuracy']:.2f} | "
            f"{r['known_accuracy_before']:.2f} | {r['known_accuracy_after']:.2f} |"
        )
    return "\n".join(lines)


CSV_COLUMNS = ("known_ratio", "method", "budget", "seeds", "accuracy", "accuracy_std",
               "macro_f1", "macro_f1_std", "open_f1", "known_f1", "published")  # fmt: skip
BATCH = 64
QUICK_STRIDE = 20
SEED = 13
MARGIN_WEIGHT = 0.0  # the margin loss lost to plain cross-entropy here (benchmarks/README.md)

SUITE = OpenIntentSuite()
