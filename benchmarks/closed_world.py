"""Suite `closed-world`: out-of-scope detection must not change a closed-world bundle's answers.

    python -m benchmarks closed-world [--datasets atis snips]

For each bundle (trained without out-of-scope examples): what the exporter's rule
(`export.out_of_scope.choose`, run on the bundle's served graph as the engine runs it) ships for
it, and the test split served three ways, one utterance batch at a time as the engine decodes:
with detection off, with the bundle's own record (what `out_of_scope_detection: bundle`, the
default, serves), and with the exporter's choice. The answers (intent, confidence, slots,
out-of-scope flag) must be identical and the test metrics unchanged. For scale, each thresholded
detector forced on at the exporter's in-scope budget: how many test utterances it would flag
and what that costs in intent accuracy — the reason detection stays off without out-of-scope
examples to choose a threshold on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.load.meta import run_meta
from benchmarks.open_world import engine_outputs, exporter_choice
from benchmarks.suite import Suite, write_csv, write_json
from export.data import read_dataset
from export.fetch import resolve_dataset
from export.out_of_scope import DEFAULT_BUDGET, DEFAULT_LABEL
from export.scoring import frame_metrics
from service.contract.oos import Detector, Reference
from service.contract.paths import PROJECT_ROOT
from service.contract.types import Frame
from service.runtime import Engine
from service.settings import EngineSettings, OpenWorldSettings

BATCH = 64


def served(engine: Engine, texts: list[str]) -> list[Frame]:
    return [f for i in range(0, len(texts), BATCH) for f in engine.parse(texts[i : i + BATCH])]


def answer(frame: Frame) -> tuple:
    """What a caller sees of one frame."""
    slots = tuple((s.name, s.start, s.end) for s in frame.slots)
    return frame.intent, round(frame.confidence, 6), slots, frame.out_of_scope


class ClosedWorldSuite(Suite):
    name = "closed-world"
    help = "ATIS/SNIPS: out-of-scope detection leaves closed-world answers unchanged"
    in_default_run = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--datasets", nargs="+", default=["atis", "snips"], help="names or folders"
        )
        parser.add_argument("--bundles", type=Path, default=PROJECT_ROOT / "bundles")

    def skip_reason(self, args: argparse.Namespace, out_dir: Path) -> str | None:
        missing = [
            d for d in args.datasets if not (args.bundles / Path(d).name / "config.json").is_file()
        ]
        return f"no bundle for {', '.join(missing)} (make export)" if missing else None

    def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        result: dict = {"meta": run_meta()}
        for dataset in args.datasets:
            result[Path(dataset).name] = self.measure(dataset, args.bundles / Path(dataset).name)
        write_json(out_dir / "closed_world.json", result)
        rows = [
            {"dataset": d, "configuration": r["configuration"], **r["test"]}
            for d, report in result.items()
            if d != "meta"
            for r in report["served"]
        ]
        write_csv(out_dir / "closed_world.csv", rows)
        return result

    @staticmethod
    def measure(dataset: str, bundle: Path) -> dict:
        splits = read_dataset(resolve_dataset(dataset), Path(dataset).name).splits
        settings = EngineSettings()
        off = Engine(
            bundle, settings=settings, open_world=OpenWorldSettings(out_of_scope_detection="off")
        )
        intents = list(off.bundle.labels.intents)
        outputs = {s: engine_outputs(off, [ex.text for ex in splits[s]]) for s in ("train", "dev")}
        record, references = exporter_choice(off, splits, outputs, DEFAULT_LABEL, DEFAULT_BUDGET)
        test = splits["test"]
        texts, gold = [ex.text for ex in test], [ex.intent for ex in test]
        gold_tags = [list(ex.tags) for ex in test]
        in_scope = off.open_world.detector.in_scope

        def serve(engine: Engine, configuration: str) -> dict:
            frames = served(engine, texts)
            metrics = frame_metrics(
                gold, [f.intent for f in frames], gold_tags, [f.word_tags for f in frames], intents
            )
            return {
                "configuration": configuration,
                "method": engine.open_world.detector.method,
                "answers": [answer(f) for f in frames],
                "test": {
                    "n": metrics["n"],
                    "intent_acc": metrics["intent_acc"],
                    "slot_f1": metrics["slot_f1"],
                    "sentence_acc": metrics["sentence_acc"],
                    "flagged_out_of_scope": sum(f.out_of_scope for f in frames),
                },
            }

        runs = [serve(off, "detection off")]
        runs.append(serve(Engine(bundle, settings=settings), "shipped default (bundle record)"))
        chosen = Engine(bundle, settings=settings)
        chosen.open_world.detector = Detector(
            record.method, record.threshold, in_scope, references.get(record.method, Reference())
        )
        runs.append(serve(chosen, "exporter's choice now"))
        baseline = runs[0]["answers"]
        for run in runs:
            run["identical_answers"] = sum(
                a == b for a, b in zip(run.pop("answers"), baseline, strict=True)
            )
        test_out = engine_outputs(off, texts)
        predicted = [intents[i] for i in test_out.probabilities.argmax(axis=1)]
        right = np.array([p == g for p, g in zip(predicted, gold, strict=True)])
        forced = []
        for method, dev in record.dev.items():
            if dev.threshold is None:
                continue
            detector = Detector(method, dev.threshold, in_scope, references[method])
            flags, _ = detector.decide(test_out.probabilities, test_out.embeddings)
            forced.append(
                {
                    "method": method,
                    "dev_threshold": dev.threshold,
                    "flagged": round(100 * float(flags.mean()), 2),
                    "intent_acc": round(100 * float((right & ~flags).mean()), 2),
                    "intent_acc_off": round(100 * float(right.mean()), 2),
                }
            )
        config = off.bundle.config
        return {
            "bundle": {
                "path": str(bundle),
                "served_variant": off.variant,
                "out_of_scope": config.out_of_scope.model_dump() if config.out_of_scope else None,
            },
            "exporter_choice": {"method": record.method, "chosen_by": record.chosen_by},
            "served": runs,
            "forced": forced,
        }

    def load_result(self, results: Path) -> dict | None:
        path = results / "closed_world.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def summary(self, result: dict) -> str:
        lines = [
            "| dataset | configuration | method | intent acc | slot F1 | sentence acc | "
            "flagged OOS | identical answers |",
            "|---|---|---|---|---|---|---|---|",
        ]
        forced = []
        for dataset, report in result.items():
            if dataset == "meta":
                continue
            for r in report["served"]:
                t = r["test"]
                lines.append(
                    f"| {dataset} | {r['configuration']} | {r['method']} | {t['intent_acc']:.2f} "
                    f"| {t['slot_f1']:.2f} | {t['sentence_acc']:.2f} | {t['flagged_out_of_scope']} "
                    f"| {r['identical_answers']} / {t['n']} |"
                )
            choice = report["exporter_choice"]
            record = report["bundle"]["out_of_scope"]
            shipped = record["method"] if record else "no record (exported before detection)"
            forced.append(
                f"- {dataset}: the bundle's own record: {shipped}; the exporter ships "
                f"`{choice['method']}` now ({choice['chosen_by']})."
            )
            forced += [
                f"  Forced `{f['method']}` (dev threshold {f['dev_threshold']:.3f}) would flag "
                f"{f['flagged']:.2f} % of test, intent accuracy {f['intent_acc_off']:.2f} → "
                f"{f['intent_acc']:.2f}."
                for f in report["forced"]
            ]
        return "\n".join([*lines, "", *forced])


SUITE = ClosedWorldSuite()
