"""The Kubernetes manifests agree with the service they deploy: ports, setting names, drain
timing, the autoscaler's metric and the dashboard's queries. Renders with `kubectl kustomize`
(from `make deploy-check`'s tool venv, which `make test` sets up)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.extensions import parse_extensions
from service.metrics import REGISTRY
from service.settings import GROUPS, Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("overlays/cpu", "overlays/cpu-generator", "overlays/cpu-tls", "overlays/gpu")
SETTING_VARIABLES = {env_name(name) for group in GROUPS.values() for name in group.model_fields}


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl") or str(ROOT / "build" / "deploy-venv" / "bin" / "kubectl")
    if not Path(kubectl).exists():
        pytest.fail("kubectl not found: `make deploy-check` installs it into build/deploy-venv")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def one(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def exported_metrics() -> set[str]:
    """Every sample name the service's registry can export."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> list[dict]:
    return render(request.param)


def settings_of(objects: list[dict]) -> dict[str, str]:
    (config,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("nlu-settings")
    ]
    return config["data"]


def test_every_configmap_key_is_a_setting_and_the_settings_load(rendered, monkeypatch):
    env = settings_of(rendered)
    assert set(env) <= SETTING_VARIABLES, set(env) - SETTING_VARIABLES
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    Settings()  # the service would start with these values


def test_ports_and_probes_match_the_settings(rendered):
    env = settings_of(rendered)
    container = one(rendered, "Deployment", "nlu-service")["spec"]["template"]["spec"]
    (nlu,) = container["containers"]
    ports = {p["name"]: p["containerPort"] for p in nlu["ports"]}
    assert ports == {
        "grpc": int(env["NLU_PORT"]),
        "health": int(env["NLU_HEALTH_PORT"]),
        "metrics": int(env["NLU_METRICS_PORT"]),
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert nlu[probe]["grpc"]["port"] == int(env["NLU_HEALTH_PORT"]), probe
    grpc_service = one(rendered, "Service", "nlu-service-grpc")["spec"]
    assert grpc_service["clusterIP"] == "None"  # headless: clients balance per call
    assert [p["targetPort"] for p in grpc_service["ports"]] == ["grpc"]
    metrics_service = one(rendered, "Service", "nlu-service-metrics")["spec"]
    assert [p["targetPort"] for p in metrics_service["ports"]] == ["metrics"]


def test_the_pod_outlives_prestop_plus_the_drain(rendered):
    env = settings_of(rendered)
    pod = one(rendered, "Deployment", "nlu-service")["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + float(env["NLU_DRAIN_GRACE_S"])


def test_the_pod_is_locked_down(rendered):
    pod = one(rendered, "Deployment", "nlu-service")["spec"]["template"]["spec"]
    context = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and context["readOnlyRootFilesystem"]
    assert context["capabilities"]["drop"] == ["ALL"] and not context["allowPrivilegeEscalation"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


def test_the_autoscaler_scales_on_a_metric_the_service_exports(rendered):
    hpa = one(rendered, "HorizontalPodAutoscaler", "nlu-service")["spec"]
    pods = [m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert pods and set(pods) <= exported_metrics()
    rules = (K8S / "monitoring" / "prometheus-adapter-rules.yaml").read_text()
    assert all(name in rules for name in pods)


def test_the_generator_component_points_the_service_at_its_service():
    objects = render("overlays/cpu-generator")
    env = settings_of(objects)
    generator = one(objects, "Service", "nlu-generator")["spec"]
    assert env["NLU_GENERATOR_BACKEND"] == "openai"
    assert env["NLU_GENERATOR_BASE_URL"] == f"http://nlu-generator:{generator['ports'][0]['port']}"


def test_every_metric_the_dashboard_queries_exists():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "nlu-service.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bnlu_\w+", target["expr"])
    }
    assert queried and queried <= exported_metrics(), queried - exported_metrics()


def test_the_image_exposes_the_ports_the_manifests_use():
    env = settings_of(render("overlays/cpu"))
    containerfile = (ROOT / "deploy" / "Containerfile").read_text()
    exposed = set(re.search(r"^EXPOSE (.+)$", containerfile, re.M).group(1).split())
    assert {env["NLU_PORT"], env["NLU_METRICS_PORT"]} <= exposed
    assert f"NLU_PORT={env['NLU_PORT']}" in containerfile


def test_extension_intents_reload_in_place(rendered):
    """A fixed-name ConfigMap (an edit updates the mounted file, which the server reloads,
    instead of rolling the pods), mounted where NLU_EXTENSION_INTENTS_FILE points, holding a
    file the server accepts."""
    env = settings_of(rendered)
    config = one(rendered, "ConfigMap", "nlu-extension-intents")
    pod = one(rendered, "Deployment", "nlu-service")["spec"]["template"]["spec"]
    (volume,) = [
        v
        for v in pod["volumes"]
        if v.get("configMap", {}).get("name") == config["metadata"]["name"]
    ]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    path = Path(env["NLU_EXTENSION_INTENTS_FILE"])
    assert path.parent == Path(mount["mountPath"]) and path.name in config["data"]
    assert parse_extensions(path, config["data"][path.name], set()) == []
