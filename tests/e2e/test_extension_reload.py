"""Extension intents over gRPC: answered without retraining, reloaded when a ConfigMap-style
symlink swap changes the file (no failed request while swapping), a broken version refused with
the old set kept, and a broken file refused at start."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.client import NluClient
from service.contract.paths import PROJECT_ROOT
from service.process import ServerProcess

SPA = ["book me a massage for tomorrow", "i want a spa appointment", "facial at the spa"]
PETS = ["feed the cat at noon", "walk the dog tonight", "take the puppy to the vet"]


def extension_file(name: str, examples: list[str]) -> str:
    lines = ["intents:", f"  - name: {name}", f"    description: {name} requests", "    examples:"]
    return "\n".join(lines + [f"      - {e}" for e in examples]) + "\n"


def publish(mount: Path, version: str, text: str) -> None:
    """What the kubelet does for a ConfigMap: write a new timestamped folder, then swap the
    `..data` symlink to it in one rename; the file itself is a symlink through `..data`."""
    folder = mount / f"..{version}"
    folder.mkdir()
    (folder / "extensions.yaml").write_text(text)
    tmp = mount / "..data_tmp"
    tmp.symlink_to(folder.name)
    tmp.replace(mount / "..data")
    if not (mount / "extensions.yaml").is_symlink():
        (mount / "extensions.yaml").symlink_to("..data/extensions.yaml")


@pytest.fixture(scope="module")
def mount(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("configmap")
    publish(path, "v1", extension_file("book_spa", SPA))
    return path


@pytest.fixture(scope="module")
def server(tiny_clinc_bundle: Path, mount: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("ext") / "server.log"
    srv = ServerProcess.launch(
        tiny_clinc_bundle,
        log_path,
        "--intra-op-threads",
        "1",
        "--extension-intents-file",
        str(mount / "extensions.yaml"),
        "--extension-poll-s",
        "0.1",
    )
    srv.wait_serving()
    yield srv
    srv.stop()


def live(client: NluClient) -> list[str]:
    return [e.name for e in client.info().extension_intents]


def wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_reload_under_load_keeps_every_request(server, mount):
    client = NluClient(server.target)
    assert live(client) == ["book_spa"]
    info = client.info()
    assert info.HasField("extension_similarity_threshold")
    answer = client.parse(SPA[0])
    assert answer.from_extension and answer.intent == "book_spa" and not answer.out_of_scope

    failures: list[Exception] = []
    answered: list[str] = []
    stop = threading.Event()

    def load() -> None:
        caller = NluClient(server.target)
        while not stop.is_set():
            try:
                answered.append(caller.parse(PETS[0]).intent)
            except grpc.RpcError as e:
                failures.append(e)
        caller.close()

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    publish(mount, "v2", extension_file("pet_care", PETS))
    wait_for(lambda: live(client) == ["pet_care"])
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert not failures
    assert answered[-1] == "pet_care"  # the new set answers once swapped in
    assert server.metric('nlu_extension_reload_total{result="ok"}') == 2

    publish(mount, "v3", "intents:\n  - name: broken\n    description: x\n    examples: [a]\n")
    wait_for(lambda: server.metric('nlu_extension_reload_total{result="error"}') >= 1)
    assert live(client) == ["pet_care"]  # the old set stays live
    assert client.parse(PETS[1]).intent == "pet_care"
    assert "extensions.yaml:4: broken: 1 examples (between 3 and 10)" in server.log()
    client.close()


def test_broken_file_at_start_is_refused_naming_the_line(tiny_clinc_bundle, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("intents:\n  - name: x\n    examples: [a, b, c]\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.server",
            "--bundle",
            str(tiny_clinc_bundle),
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--extension-intents-file",
            str(bad),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"{bad}:2: intent has no 'description'" in result.stderr


def test_a_generator_confirms_extension_candidates_over_grpc(tiny_clinc_bundle, tmp_path):
    """An OpenAI-compatible server (no token probabilities) writes its choice; the prompt shows
    the extension intent's description and examples; its answer comes back as an extension
    answer from the generator, and a choice outside the options falls back to the encoder."""
    from benchmarks.chat_stub import Script, chat_server
    from service.gen.nlu.v1 import nlu_pb2

    path = tmp_path / "extensions.yaml"
    path.write_text(extension_file("book_spa", SPA))
    script = Script(content='{"intent": "book_spa", "slots": []}')
    with chat_server(script) as url:
        srv = ServerProcess.launch(
            tiny_clinc_bundle, tmp_path / "log",
            "--intra-op-threads", "1", "--extension-intents-file", str(path),
            "--extension-generator-confirms",
            "--generator-backend", "openai", "--generator-base-url", url,
            "--generator-max-retries", "0", "--confidence-threshold", "0",
        )  # fmt: skip
        srv.wait_serving()
        try:
            client = NluClient(srv.target)
            answer = client.parse(SPA[1])
            assert answer.source == nlu_pb2.SOURCE_GENERATOR and answer.from_extension
            assert answer.intent == "book_spa" and not answer.out_of_scope
            prompt = script.requests[-1]["messages"][-1]["content"]
            assert '- book_spa: book_spa requests. e.g. "book me a massage' in prompt
            assert prompt.endswith(f'Utterance: "{SPA[1]}"') and "- none: " in prompt
            script.content = '{"intent": "sing_a_song", "slots": []}'
            fallback = client.parse(SPA[1])
            assert fallback.source == nlu_pb2.SOURCE_ENCODER
            assert fallback.fallback_reason == "unknown_intent" and fallback.from_extension
            client.close()
        finally:
            assert srv.stop() == 0
