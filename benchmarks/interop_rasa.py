"""Interop check: a real Rasa dialogue server using this service as its external NLU.

    python -m benchmarks.interop_rasa --bundle bundles/atis-open-world [--rasa .venv-rasa/bin/rasa]

(`make interop-rasa` builds the Rasa virtualenv and the bundle first.) Starts our server with
the HTTP front end and a bearer token, writes a minimal Rasa project (the bundle's intents plus
`nlu_fallback`, its slot names as entities, a rule answering each checked intent and one for the
fallback, `endpoints.yml` → `nlu: url: http://127.0.0.1:PORT` with the token), trains its
dialogue policy, runs `rasa run --enable-api`, sends user messages on Rasa's REST channel and
reads Rasa's tracker (`GET /conversations/{id}/tracker`): its `latest_message` must carry our
intent, confidence, entities (name, offsets, value, confidence) and ranking exactly as our
`/model/parse` answers them, and Rasa must have acted on them (the rule's response), including
an utterance we flag out-of-scope (`nlu_fallback`). Writes benchmarks/results/interop_rasa.json
with the Rasa version and every comparison; exits 1 when a check fails. Not part of CI: Rasa
brings TensorFlow (about 1 GB) and takes minutes to start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from benchmarks.load.meta import run_meta
from service.contract.paths import PROJECT_ROOT
from service.process import ServerProcess, free_port

TOKEN = "interop-secret"
IN_SCOPE = [
    "show me flights from boston to denver tomorrow morning",
    "what is the cheapest fare from dallas to baltimore",
    "which airlines fly from pittsburgh to atlanta",
]
OUT_OF_SCOPE_CANDIDATES = [
    "sing me a song about the ocean",
    "what is the capital of australia",
    "how do i bake sourdough bread",
    "tell me a joke about penguins",
    "set an alarm for seven",
]
RASA_START_S = 600.0


def our_parse(url: str, text: str) -> dict:
    body = {"text": text, "message_id": "probe", "token": TOKEN}
    got = httpx.post(f"{url}/model/parse", json=body, timeout=30)
    got.raise_for_status()
    return got.json()


def write_project(folder: Path, intents: list[str], entities: list[str], checked: dict) -> None:
    """A minimal Rasa project: no NLU pipeline of its own, one rule per checked intent."""
    responses = {f"utter_{name}": [{"text": f"rule for {name}"}] for name in checked}
    rules = [
        {"rule": f"answer {name}", "steps": [{"intent": name}, {"action": f"utter_{name}"}]}
        for name in checked
    ]
    files = {
        "config.yml": {
            "recipe": "default.v1",
            "language": "en",
            "assistant_id": "nlu-service-interop",
            "pipeline": [],
            "policies": [{"name": "RulePolicy"}],
        },
        "domain.yml": {
            "version": "3.1",
            "intents": sorted(set(intents) | {"nlu_fallback"}),
            "entities": entities,
            "responses": responses,
        },
        "data/rules.yml": {"version": "3.1", "rules": rules},
        "endpoints.yml": {"nlu": {"url": None, "token": TOKEN}},
    }
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content, sort_keys=False))


def rasa_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "RASA_TELEMETRY_ENABLED": "false"}


def rasa_version(rasa: Path) -> str:
    out = subprocess.run([str(rasa), "--version"], capture_output=True, text=True, env=rasa_env())
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("Rasa Version"))
    return line.split(":", 1)[1].strip()


def wait_rasa(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + RASA_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rasa exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/status", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise TimeoutError(f"rasa not up after {RASA_START_S} s:\n{log.read_text()[-3000:]}")


def compare(tracker_message: dict, ours: dict) -> dict[str, bool]:
    """What Rasa's tracker kept of our answer, field by field."""
    entity_keys = ("entity", "start", "end", "value", "confidence_entity", "extractor")
    kept = [{k: e.get(k) for k in entity_keys} for e in tracker_message.get("entities", [])]
    return {
        "intent": tracker_message["intent"].get("name") == ours["intent"]["name"],
        "confidence": tracker_message["intent"].get("confidence") == ours["intent"]["confidence"],
        "entities": kept == ours["entities"],
        "intent_ranking": tracker_message.get("intent_ranking") == ours["intent_ranking"],
        "text": tracker_message.get("text") == ours["text"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=PROJECT_ROOT / "bundles/atis-open-world")
    parser.add_argument("--rasa", type=Path, default=PROJECT_ROOT / ".venv-rasa/bin/rasa")
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "benchmarks/results/interop_rasa.json"
    )
    args = parser.parse_args(argv)
    args.rasa, args.bundle = args.rasa.absolute(), args.bundle.absolute()  # Rasa runs elsewhere
    work = Path(tempfile.mkdtemp(prefix="interop-rasa-"))
    ours = ServerProcess.launch(
        args.bundle, work / "nlu.log", "--auth-tokens", TOKEN, "--generator-backend", "none",
        http=True,
    )  # fmt: skip
    rasa_process = None
    try:
        ours.wait_serving()
        answers = {text: our_parse(ours.http_url, text) for text in IN_SCOPE}
        flagged = [t for t in OUT_OF_SCOPE_CANDIDATES if our_parse(ours.http_url, t)["intent"]
                   ["name"] == "nlu_fallback"]  # fmt: skip
        if not flagged:
            raise SystemExit(f"{args.bundle}: flags none of the out-of-scope candidates")
        answers[flagged[0]] = our_parse(ours.http_url, flagged[0])
        checked = {a["intent"]["name"] for a in answers.values()}
        labels = json.loads((args.bundle / "labels.json").read_text())
        entities = sorted({t[2:] for t in labels["slot_tags"] if t != "O"})
        write_project(work / "project", labels["intents"], entities, checked)
        endpoints = work / "project/endpoints.yml"
        config = yaml.safe_load(endpoints.read_text())
        config["nlu"]["url"] = ours.http_url
        endpoints.write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run(
            [str(args.rasa), "train", "--fixed-model-name", "interop", "--quiet"],
            cwd=work / "project", env=rasa_env(), check=True, capture_output=True,
        )  # fmt: skip
        rasa_port = free_port()
        rasa_log = work / "rasa.log"
        with rasa_log.open("w") as log_file:
            rasa_process = subprocess.Popen(
                [str(args.rasa), "run", "--enable-api", "--endpoints", "endpoints.yml",
                 "--port", str(rasa_port), "--interface", "127.0.0.1", "-m", "models"],
                cwd=work / "project", env=rasa_env(), stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        rasa_url = f"http://127.0.0.1:{rasa_port}"
        wait_rasa(rasa_url, rasa_process, rasa_log)
        rows = []
        for i, (text, answer) in enumerate(answers.items()):
            sender = f"interop-{i}"
            replies = httpx.post(
                f"{rasa_url}/webhooks/rest/webhook",
                json={"sender": sender, "message": text},
                timeout=60,
            ).json()
            tracker = httpx.get(f"{rasa_url}/conversations/{sender}/tracker", timeout=30).json()
            latest = tracker["latest_message"]
            expected_reply = f"rule for {answer['intent']['name']}"
            checks = compare(latest, answer)
            checks["rasa_acted_on_it"] = [r.get("text") for r in replies] == [expected_reply]
            rows.append(
                {
                    "text": text,
                    "fallback_case": text == flagged[0],
                    "ours": answer,
                    "tracker_latest_message": {
                        k: latest.get(k) for k in ("intent", "entities", "intent_ranking")
                    },
                    "rasa_replies": replies,
                    "checks": checks,
                }
            )
        passed = all(all(r["checks"].values()) for r in rows)
        result = {
            "meta": run_meta(),
            "rasa_version": rasa_version(args.rasa),
            "bundle": str(args.bundle),
            "endpoints_yml": {"nlu": {"url": "http://127.0.0.1:PORT", "token": "<a token>"}},
            "checked": "Rasa's tracker latest_message carries our /model/parse intent, "
            "confidence, entities and ranking, and Rasa's rule answered it; one utterance "
            "flagged out-of-scope arrives as nlu_fallback",
            "passed": passed,
            "messages": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        for r in rows:
            print(("ok  " if all(r["checks"].values()) else "FAIL"), r["text"], r["checks"])
        print(f"Rasa {result['rasa_version']}: {'passed' if passed else 'FAILED'} → {args.out}")
        return 0 if passed else 1
    finally:
        if rasa_process is not None:
            rasa_process.terminate()
            rasa_process.wait(timeout=60)
        ours.stop()


if __name__ == "__main__":
    sys.exit(main())
