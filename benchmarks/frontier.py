"""Suite `frontier`: encoder variants that trade accuracy for speed, on one chart.

    python -m benchmarks frontier [--data atis,snips] [--layers 6,4,3] [--distilled 4,3]

Variants: MiniLM's 6 layers (the served model, `make run`'s artifacts/DATA and bundles/DATA), or
its first 4 or 3, each fine-tuned with the served model's own training settings (trained into
artifacts/frontier/DATA-lN and exported to bundles/frontier/DATA-lN when missing: about 5 min
and 4 min on ATIS with 2 threads on a Zen 5, 18 and 14 on a Zen 3); `--distilled` depths are
trained once more with the served model as teacher (its logits as soft targets, `export.distill`;
DATA-lN-kd). Each variant in every CPU precision its bundle holds (fp32; int8 when a graph passed
the export's dev gate on this CPU). Accuracy: the test metrics the export
recorded for the graph as the engine runs it. Speed: the engine in-process (tokenise → ONNX →
decode, 2 threads), every variant interleaved window by window (`benchmarks.load.measure`): p50 at
batch 1 and utterances/s at batch 32. The routed system (encoder + generator fallback) comes
from the committed tradeoff suite's result, on its own bundle (its speed plotted only when that
run's CPU is this one's). A shorter `max_seq_len` is not
a variant: the token lengths in `meta` show why it would change nothing on this data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from benchmarks.limit import token_counts
from benchmarks.load.measure import WindowPolicy, measure_interleaved
from benchmarks.load.meta import run_meta
from benchmarks.suite import Suite, save_figure, write_csv, write_json
from export.data import read_dataset
from export.fetch import resolve_dataset
from export.onnx import build_bundle
from export.train import TrainConfig, train
from service.contract.bundle import CPU_VARIANTS
from service.contract.paths import PROJECT_ROOT
from service.runtime import Engine
from service.settings import EngineSettings

THROUGHPUT_BATCH = 32


def layer_list(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v]


def dataset_list(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


class FrontierSuite(Suite):
    name = "frontier"
    help = "encoder depth and precision against accuracy, p50 and throughput"
    in_default_run = False  # trains the shallower encoders (minutes each)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--data", type=dataset_list, default=["atis"], help="datasets, comma-separated"
        )
        parser.add_argument("--layers", type=layer_list, default=[6, 4, 3])
        parser.add_argument(
            "--distilled",
            type=layer_list,
            help="depths also trained with the served model as teacher (default: those of "
            "--layers below the served depth; '' for none)",
        )
        parser.add_argument("--threads", type=int, default=2, help="training and inference")
        parser.add_argument("--model", type=Path, help="the 6-layer model (artifacts/DATA)")
        parser.add_argument("--bundle", type=Path, help="its bundle (bundles/DATA)")

    def served(self, args: argparse.Namespace, data: str) -> tuple[Path, Path]:
        return (
            args.model or PROJECT_ROOT / "artifacts" / data,
            args.bundle or PROJECT_ROOT / "bundles" / data,
        )

    def paths(
        self, args: argparse.Namespace, out_dir: Path, data: str, layers: int, distilled: bool
    ) -> tuple[Path, Path]:
        """(model, bundle) of the `layers`-deep variant: the served ones at the served depth,
        else under artifacts/frontier and bundles/frontier (under the output folder when
        quick, so a smoke run leaves the project alone)."""
        model, bundle = self.served(args, data)
        if layers == encoder_depth(model) and not distilled:
            return model, bundle
        root = out_dir if args.quick else PROJECT_ROOT
        name = f"{Path(data).name}-l{layers}{'-kd' if distilled else ''}"
        return root / "artifacts" / "frontier" / name, root / "bundles" / "frontier" / name

    def skip_reason(self, args: argparse.Namespace, out_dir: Path) -> str | None:
        if len(args.data) > 1 and (args.model or args.bundle):
            return "--model and --bundle name one dataset's: give one --data with them"
        for data in args.data:
            model, bundle = self.served(args, data)
            if not (model / "config.json").is_file() or not (bundle / "config.json").is_file():
                return f"needs the served model {model} and its bundle {bundle} (make run)"
            if encoder_depth(model) in self.distilled(args, data):
                return f"--distilled {encoder_depth(model)}: the served depth is the teacher"
        return None

    def distilled(self, args: argparse.Namespace, data: str) -> list[int]:
        if args.distilled is not None:
            return args.distilled
        served = encoder_depth(self.served(args, data)[0])
        return [n for n in args.layers if n < served]

    def build(
        self, args: argparse.Namespace, out_dir: Path, data: str, layers: int, distilled: bool
    ) -> Path:
        """The bundle of the `layers`-deep variant, trained and exported when missing with the
        served model's training settings (only the depth, the output, the threads and, when
        distilled, the teacher differ)."""
        model, bundle = self.paths(args, out_dir, data, layers, distilled)
        if (bundle / "config.json").is_file():
            return bundle
        if not (model / "config.json").is_file():
            served, _ = self.served(args, data)
            settings = json.loads((served / "config.json").read_text())["train"]
            settings |= {"out": str(model), "layers": layers, "threads": args.threads}
            if distilled:
                settings["distill_from"] = str(served)
            train(TrainConfig(**settings))
        build_bundle(model, bundle)
        return bundle

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        rows, routed, datasets = [], {}, {}
        meta = run_meta()
        for data in args.data:
            name = Path(data).name
            measured, datasets[name] = self.measure(args, out_dir, data)
            rows += measured
            routed[name] = routed_point(name, meta["cpu"])
        result = {
            "rows": rows,
            "routed": routed,
            "meta": {
                **meta,
                "threads": args.threads,
                "throughput_batch": THROUGHPUT_BATCH,
                "datasets": datasets,
                "quick": args.quick,
            },
        }
        write_json(out_dir / "frontier.json", result)
        write_csv(out_dir / "frontier.csv", rows)
        self.plot(result, out_dir / "frontier.png")
        return result

    def measure(self, args: argparse.Namespace, out_dir: Path, data: str) -> tuple[list, dict]:
        """One dataset's rows (its variants interleaved window by window) and its token
        lengths."""
        texts = [ex.text for ex in read_dataset(resolve_dataset(data)).splits["test"]]
        depths = [(n, False) for n in args.layers] + [(n, True) for n in self.distilled(args, data)]
        bundles = {depth: self.build(args, out_dir, data, *depth) for depth in depths}
        engines, records = {}, {}
        for (layers, distilled), bundle in bundles.items():
            held = json.loads((bundle / "config.json").read_text())["variants"]
            for precision in (p for p in CPU_VARIANTS if p in held):
                name = f"L{layers}{' distilled' if distilled else ''} {precision}"
                settings = EngineSettings(
                    variant=precision, intra_op_threads=args.threads, ort_allow_spinning=False
                )
                engines[name] = engine = Engine(bundle, settings=settings)
                records[name] = (
                    layers,
                    distilled,
                    precision,
                    engine.bundle.config.variants[precision],
                    bundle,
                )
        policy = WindowPolicy.quick() if args.quick else WindowPolicy()
        sample = texts[:60] if args.quick else texts
        runs = {name: engine.parse for name, engine in engines.items()}
        single = measure_interleaved(runs, [[t] for t in sample], policy)
        batches = [
            sample[i : i + THROUGHPUT_BATCH] for i in range(0, len(sample), THROUGHPUT_BATCH)
        ]
        batched = measure_interleaved(
            runs, [b for b in batches if len(b) == THROUGHPUT_BATCH] or batches, policy
        )
        rows = [
            {
                "dataset": Path(data).name,
                "variant": name,
                "layers": layers,
                "distilled": distilled,
                "precision": precision,
                "graph": record.graph,
                "intent_accuracy": record.test["intent_acc"],
                "slot_f1": record.test.get("slot_f1"),
                "sentence_accuracy": record.test["sentence_acc"],
                "p50_ms": single[name]["p50_ms"],
                "p99_ms": single[name]["p99_ms"],
                "utt_per_s": batched[name]["utterances_per_s"],
                "stable": single[name]["stable"] and batched[name]["stable"],
                "bundle": str(
                    bundle.relative_to(PROJECT_ROOT)
                    if bundle.is_relative_to(PROJECT_ROOT)
                    else bundle
                ),
            }
            for name, (layers, distilled, precision, record, bundle) in records.items()
        ]
        first = next(iter(engines.values()))
        tokens = token_counts(first, texts)
        lengths = {
            "tokens_per_utterance": {
                "mean": round(float(np.mean(tokens)), 1),
                "p99": int(np.percentile(tokens, 99)),
                "max": int(max(tokens)),
            },
            "max_seq_len": first.bundle.config.max_seq_len,
            "test_utterances": len(texts),
        }
        return rows, lengths

    def plot(self, result: dict, path: Path) -> None:
        datasets = list(dict.fromkeys(r["dataset"] for r in result["rows"]))
        fig = Figure(figsize=(10, 4 * len(datasets)))
        axes = fig.subplots(len(datasets), 2, squeeze=False)
        for (latency, throughput), data in zip(axes, datasets, strict=True):
            for row in (r for r in result["rows"] if r["dataset"] == data):
                marker = "o" if row["precision"] == "fp32" else "s"
                point = (row["p50_ms"], row["sentence_accuracy"])
                latency.scatter(*point, marker=marker)
                latency.annotate(row["variant"], point, fontsize=8)
                point = (row["utt_per_s"], row["sentence_accuracy"])
                throughput.scatter(*point, marker=marker)
                throughput.annotate(row["variant"], point, fontsize=8)
            routed = result["routed"].get(data)
            if routed and routed["same_cpu"]:  # speeds from another CPU do not compare
                point = (routed["p50_ms"], routed["sentence_accuracy"])
                latency.scatter(*point, marker="*", s=120)
                latency.annotate("routed (tradeoff suite)", point, fontsize=8)
            latency.set_xlabel("p50 ms, batch 1, in-process")
            throughput.set_xlabel(f"utterances / s, batch {THROUGHPUT_BATCH}")
            for ax in (latency, throughput):
                ax.set_ylabel(f"{data} sentence accuracy (test, %)")
        fig.suptitle("Speed / accuracy frontier")
        save_figure(fig, path)

    def summary(self, result: dict) -> str:
        lines = [
            "| dataset | variant | graph | intent acc | slot F1 | sentence acc | "
            f"p50 ms (batch 1) | utt/s (batch {result['meta']['throughput_batch']}) |",
            "|---" * 8 + "|",
        ]
        for data in result["meta"]["datasets"]:
            for r in (r for r in result["rows"] if r["dataset"] == data):
                lines.append(
                    f"| {r['dataset']} | {r['variant']} | {r['graph']} | {r['intent_accuracy']} "
                    f"| {r['slot_f1']} | {r['sentence_accuracy']} | {r['p50_ms']} | "
                    f"{r['utt_per_s']} |"
                )
            routed = result["routed"].get(data)
            if routed:
                speed = (routed["p50_ms"], routed["utt_per_s"])
                if not routed["same_cpu"]:
                    speed = ("(other CPU)", "(other CPU)")
                lines.append(
                    f"| {data} | routed ({routed['source']}) | | {routed['intent_accuracy']} | "
                    f"{routed['slot_f1']} | {routed['sentence_accuracy']} | {speed[0]} | "
                    f"{speed[1]} |"
                )
        lines.append("")
        for data, lengths in result["meta"]["datasets"].items():
            tokens = lengths["tokens_per_utterance"]
            lines.append(
                f"{data}: tokens per utterance mean {tokens['mean']}, p99 "
                f"{tokens['p99']}, max {tokens['max']} (max_seq_len {lengths['max_seq_len']})."
            )
        return "\n".join(lines)


def encoder_depth(model: Path) -> int:
    """How many transformer layers the trained model's encoder has."""
    return json.loads((model / "encoder" / "config.json").read_text())["num_hidden_layers"]


def routed_point(data: str, cpu: str) -> dict | None:
    """The routed system's test point from the committed tradeoff result, when it has one;
    `same_cpu` says whether it was measured on `cpu`, this run's."""
    path = PROJECT_ROOT / "benchmarks" / "results" / "tradeoff.json"
    if not path.is_file():
        return None
    tradeoff = json.loads(path.read_text())
    routed = tradeoff.get(data, {}).get("routed")
    if not routed:
        return None
    measured_on = tradeoff["meta"]["cpu"]
    return {
        "source": f"tradeoff.json, threshold {routed['threshold']}, its own bundle, {measured_on}",
        "same_cpu": measured_on == cpu,
        "intent_accuracy": routed["intent_acc"],
        "slot_f1": routed["slot_f1"],
        "sentence_accuracy": routed["sentence_acc"],
        "p50_ms": routed["p50_ms"],
        "utt_per_s": routed["utterances_per_s"],
        "fallback_rate": routed["fallback_rate"],
    }


SUITE = FrontierSuite()
