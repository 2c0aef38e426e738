"""Image smoke test: start the built image's own entrypoint as its non-root user and prove it
serves, then drains on SIGTERM. Run by `make image-smoke` (and so by `.ci/run`); with
`--generator`, the generator image answers /health and a chat completion
(`make image-generator-smoke`, not in CI: a ~2 GB build).

    python deploy/smoke.py --image localhost/nlu-service:smoke --out deploy/results/image-smoke.json

`buildah run --isolation chroot` shares the host's network and PID namespace: the server listens
on free 127.0.0.1 ports and is signalled directly. What chroot isolation cannot show (PID 1 signal
handling, a read-only root filesystem) is checked in the manifests only (deploy/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.load.meta import run_meta
from service.client import NluClient
from service.process import free_port

SERVING_TIMEOUT_S = 120.0


class SmokeFailure(RuntimeError):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeFailure(what)
    print(f"ok: {what}")


def image_config(buildah: list[str], image: str) -> dict:
    out = subprocess.run(
        [*buildah, "inspect", "--type", "image", image], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)["OCIv1"]["config"]


def image_size_bytes(image: str) -> int:
    out = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", image],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip())


def children(pid: int) -> list[int]:
    """Every descendant of `pid` (the server runs under buildah's chroot helper)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for status in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = status.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                child = int(status.parent.name)
                found.append(child)
                frontier.append(child)
    return found


def server_pid(runner: subprocess.Popen, entrypoint: list[str]) -> int:
    for pid in children(runner.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if [a.decode() for a in argv[: len(entrypoint)]] == entrypoint:
            return pid
    raise SmokeFailure("no server process under buildah run")


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise SmokeFailure(f"no Uid line for {pid}")


def wait_serving(client: NluClient, runner: subprocess.Popen, log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < SERVING_TIMEOUT_S:
        if runner.poll() is not None:
            raise SmokeFailure(f"the container exited early:\n{log.read_text()}")
        try:
            if client.health() == "SERVING":
                return time.monotonic() - started
        except Exception:  # not listening yet
            pass
        time.sleep(0.05)
    raise SmokeFailure(f"not SERVING after {SERVING_TIMEOUT_S} s:\n{log.read_text()}")


def exercise(client: NluClient, metrics_port: int) -> None:
    response = client.parse("book a flight from boston to denver tomorrow")
    check(bool(response.intent) and response.model_version != "", "Parse answers")
    batch = client.parse_batch(["list airlines", "show me fares to denver"])
    check(len(batch) == 2 and all(r.intent for r in batch), "ParseBatch answers in order")
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    check('nlu_requests_total{code="OK",method="Parse"} 1.0' in text, "metrics over loopback")


def run_smoke(buildah: list[str], image: str) -> dict:
    config = image_config(buildah, image)
    entrypoint, user = config["Entrypoint"], config.get("User", "")
    check(user.split(":")[0] not in ("", "0", "root"), f"image user is non-root ({user})")
    port, metrics_port, health_port = free_port(), free_port(), free_port()
    container = subprocess.run(
        [*buildah, "from", image], check=True, capture_output=True, text=True
    ).stdout.strip()
    log = Path("build") / "image-smoke.log"
    log.parent.mkdir(exist_ok=True)
    try:
        no_torch = subprocess.run(
            [*buildah, "run", "--isolation", "chroot", container, "--", entrypoint[0], "-c",
             "import importlib.util as u, sys; "
             "sys.exit(any(u.find_spec(m) for m in ('torch', 'transformers')))"],
        )  # fmt: skip
        check(no_torch.returncode == 0, "no torch or transformers in the image")
        command = [
            *buildah, "run", "--isolation", "chroot", "--user", user,
            "--env", f"NLU_PORT={port}", "--env", f"NLU_METRICS_PORT={metrics_port}",
            "--env", f"NLU_HEALTH_PORT={health_port}",
            "--env", "NLU_HOST=127.0.0.1", "--env", "NLU_INTRA_OP_THREADS=1",
            container, "--", *entrypoint,
        ]  # fmt: skip
        print("$", shlex.join(command))
        with log.open("w") as out:
            runner = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        client = NluClient(f"127.0.0.1:{port}", timeout_s=10)
        try:
            serving_s = wait_serving(client, runner, log)
            check(True, f"SERVING after {serving_s:.2f} s")
            exercise(client, metrics_port)
            probe = NluClient(f"127.0.0.1:{health_port}", timeout_s=10)
            check(probe.health() == "SERVING", "the health-only port answers probes")
            probe.close()
        finally:
            client.close()
        pid = server_pid(runner, entrypoint)
        check(uid_of(pid) == int(user.split(":")[0]), f"server runs as uid {user}")
        stop_signal = signal.Signals[config.get("StopSignal", "SIGTERM")]
        os.kill(pid, stop_signal)
        exit_code = runner.wait(timeout=60)
        check(exit_code == 0, f"{stop_signal.name} → drained and exited 0")
        check('"msg": "stopped"' in log.read_text(), "the drain ran to the end")
    finally:
        subprocess.run([*buildah, "rm", container], capture_output=True)
    return {
        "image": image,
        "image_size_mb": round(image_size_bytes(image) / 1e6, 1),
        "time_to_serving_s": round(serving_s, 2),
        "user": user,
        "stop_signal": stop_signal.name,
        "exit_code": exit_code,
    }


def run_generator_smoke(buildah: list[str], image: str) -> dict:
    """The generator image: `transformers serve` answers /health and one chat completion."""
    config = image_config(buildah, image)
    user = config.get("User", "")
    check(user.split(":")[0] not in ("", "0", "root"), f"image user is non-root ({user})")
    port = free_port()
    command_line = [*config["Entrypoint"], *config["Cmd"]]
    command_line[command_line.index("--port") + 1] = str(port)
    command_line[command_line.index("--host") + 1] = "127.0.0.1"
    container = subprocess.run(
        [*buildah, "from", image], check=True, capture_output=True, text=True
    ).stdout.strip()
    log = Path("build") / "generator-smoke.log"
    log.parent.mkdir(exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    try:
        command = [
            *buildah, "run", "--isolation", "chroot", "--user", user, container, "--",
            *command_line,
        ]  # fmt: skip
        print("$", shlex.join(command))
        with log.open("w") as out:
            runner = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        started = time.monotonic()
        while True:
            if runner.poll() is not None:
                raise SmokeFailure(f"the container exited early:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > SERVING_TIMEOUT_S:
                raise SmokeFailure(f"no /health after {SERVING_TIMEOUT_S} s:\n{log.read_text()}")
            time.sleep(0.2)
        ready_s = time.monotonic() - started
        check(True, f"/health after {ready_s:.1f} s")
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": command_line[command_line.index("serve") + 1],
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 8,
            },
            timeout=120,
        ).json()
        check(bool(answer["choices"][0]["message"]["content"]), "a chat completion answers")
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
        subprocess.run([*buildah, "rm", container], capture_output=True)
    return {"image": image, "image_size_mb": round(image_size_bytes(image) / 1e6, 1),
            "time_to_health_s": round(ready_s, 1), "user": user}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image", required=True)
    p.add_argument("--buildah", default="buildah", help="buildah command (with global flags)")
    p.add_argument("--out", type=Path, help="result file (JSON) to write")
    p.add_argument(
        "--generator", action="store_true", help="the image is the generator (transformers serve)"
    )
    args = p.parse_args(argv)
    smoke = run_generator_smoke if args.generator else run_smoke
    try:
        result = smoke(shlex.split(args.buildah), args.image)
    except (SmokeFailure, subprocess.CalledProcessError) as e:
        print(f"image smoke test failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**result, "meta": run_meta()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
