"""The Kubernetes manifests agree with the service they deploy: ports, setting names, drain
timing, the autoscaler's metric and the dashboard's queries. Renders with `kubectl kustomize`
(from `make deploy-check`'s tool venv, which `make test` sets up)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from service.extensions import parse_extensions
from service.metrics import REGISTRY
from service.settings import GROUPS, Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("overlays/cpu", "overlays/cpu-generator", "overlays/cpu-tls", "overlays/gpu")
SETTING_VARIABLES = {env_name(name) for group in GROUPS.values() for name in group.model_fields}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
GPU_SWAP = {"onnxruntime": "onnxruntime-gpu"}  # what the GPU lock installs instead


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


def test_the_base_autoscaler_scales_on_cpu_alone(rendered):
    """A metric nothing serves stops an HPA from ever scaling down: the base lists CPU only."""
    hpa = one(rendered, "HorizontalPodAutoscaler", "nlu-service")["spec"]
    assert [m["type"] for m in hpa["metrics"]] == ["Resource"]


def test_queue_autoscaling_asks_for_what_the_adapter_serves(tmp_path):
    """components/queue-autoscaling on the cpu overlay: its Pods metric is one the service
    exports and the one name prometheus-adapter-values.yaml serves it as."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / "cpu", tmp_path)],
                "components": [os.path.relpath(K8S / "components" / "queue-autoscaling", tmp_path)],
            }
        )
    )
    hpa = one(render(str(tmp_path)), "HorizontalPodAutoscaler", "nlu-service")["spec"]
    pods = [m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"]
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert pods == [rule["name"]["as"]] and set(pods) <= exported_metrics()
    assert "by (<<.GroupBy>>)" in rule["metricsQuery"]  # one value per pod, not one in all


def test_every_metric_the_alerts_query_exists():
    rule = yaml.safe_load((K8S / "monitoring" / "prometheusrule.yaml").read_text())
    queried = {
        name
        for group in rule["spec"]["groups"]
        for r in group["rules"]
        for name in re.findall(r"\bnlu_\w+", r["expr"])
    }
    assert queried and queried <= exported_metrics(), queried - exported_metrics()


def test_monitoring_objects_carry_the_label_the_stack_selects():
    objects = render("monitoring")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert one(objects, kind, "nlu-service")["metadata"]["labels"]["release"]
    dashboard = one(objects, "ConfigMap", "nlu-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["nlu-service.json"])["panels"]


def test_the_generator_component_points_the_service_at_its_service():
    objects = render("overlays/cpu-generator")
    env = settings_of(objects)
    generator = one(objects, "Service", "nlu-generator")["spec"]
    assert env["NLU_GENERATOR_BACKEND"] == "openai"
    assert env["NLU_GENERATOR_BASE_URL"] == f"http://nlu-generator:{generator['ports'][0]['port']}"


def test_every_metric_the_dashboard_queries_exists():
    dashboard = json.loads((K8S / "monitoring" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bnlu_\w+", target["expr"])
    }
    assert queried and queried <= exported_metrics(), queried - exported_metrics()


@pytest.mark.parametrize("name", ["Containerfile", "Containerfile.gpu"])
def test_the_image_exposes_the_ports_the_manifests_use(name):
    env = settings_of(render("overlays/cpu"))
    containerfile = (ROOT / "deploy" / name).read_text()
    exposed = set(re.search(r"^EXPOSE (.+)$", containerfile, re.M).group(1).split())
    assert {env["NLU_PORT"], env["NLU_HEALTH_PORT"], env["NLU_METRICS_PORT"]} <= exposed
    for key in ("NLU_PORT", "NLU_HEALTH_PORT", "NLU_METRICS_PORT"):
        assert f"{key}={env[key]}" in containerfile, key


@pytest.mark.parametrize("name", ["Containerfile", "Containerfile.gpu"])
def test_the_image_python_is_the_one_pyproject_supports(name):
    base = re.search(r"^ARG BASE=python:(\d+\.\d+)-", (ROOT / "deploy" / name).read_text(), re.M)
    assert base, f"{name}: BASE is not a python:X.Y image"
    supported = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert Version(base.group(1)) in supported


@pytest.mark.parametrize(
    ("lock", "swap"),
    [("requirements-serving.lock", {}), ("requirements-serving-gpu.lock", GPU_SWAP)],
)
def test_the_serving_locks_pin_what_pyproject_asks_for(lock, swap):
    """Every base dependency pinned, with hashes, at a version its specifier admits: a stale
    lock (`make lock` regenerates it) fails here, not in an image build."""
    text = (ROOT / "deploy" / lock).read_text()
    pins = {
        canonicalize_name(m.group(1)): Version(m.group(2))
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+) \\$", text, re.M)
    }
    assert text.count("--hash=sha256:") >= len(pins) > 0
    for dependency in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(swap.get(requirement.name, requirement.name))
        assert name in pins, f"{lock}: {name} is not pinned"
        assert pins[name] in requirement.specifier, f"{lock}: {name} {pins[name]} {requirement}"


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


# What each overlay means to deploy: its images (name:tag), the settings that must reach the
# NLU container after every merge, and the model name the NLU service asks its generator for,
# which the generator must serve.
INTENT = {
    "overlays/cpu": {
        "images": {"nlu": "registry.example.com/nlu/nlu-service:0.1.0"},
        "settings": {"NLU_PROVIDER": "cpu", "NLU_VARIANT": "int8"},
    },
    "overlays/cpu-tls": {
        "images": {"nlu": "registry.example.com/nlu/nlu-service:0.1.0"},
        "settings": {
            "NLU_PROVIDER": "cpu",
            "NLU_TLS_CERT_FILE": "/etc/nlu/tls/tls.crt",
            "NLU_REFLECTION": "false",
        },
    },
    "overlays/cpu-generator": {
        "images": {
            "nlu": "registry.example.com/nlu/nlu-service:0.1.0",
            "generator": "registry.example.com/nlu/nlu-generator:0.1.0",
        },
        "settings": {"NLU_PROVIDER": "cpu", "NLU_GENERATOR_BACKEND": "openai"},
        "generator_model": "/models/smollm2",
    },
    "overlays/gpu": {
        "images": {
            "nlu": "registry.example.com/nlu/nlu-service-gpu:0.1.0",
            "generator": "docker.io/vllm/vllm-openai:v0.11.0",
        },
        "settings": {"NLU_PROVIDER": "cuda", "NLU_VARIANT": "fp32"},
        "generator_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    },
}


def containers(objects: list[dict]) -> dict[str, dict]:
    """Every container of every Deployment, by container name."""
    return {
        c["name"]: c
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }


def served_model(generator: dict) -> str:
    """The model name the generator container answers to: vLLM's --served-model-name or
    --model, `transformers serve`'s positional model."""
    args = generator["args"]
    for flag in ("--served-model-name", "--model"):
        if flag in args:
            return args[args.index(flag) + 1]
    return args[args.index("serve") + 1]


@pytest.mark.parametrize("overlay", sorted(INTENT))
def test_each_overlay_deploys_the_images_it_names(overlay):
    running = {name: c["image"] for name, c in containers(render(overlay)).items()}
    assert running == INTENT[overlay]["images"]


@pytest.mark.parametrize("overlay", sorted(INTENT))
def test_each_overlay_settings_reach_the_container(overlay):
    """The effective ConfigMap after every merge (base, components, overlay), as the container
    reads it through envFrom."""
    objects = render(overlay)
    env = settings_of(objects)
    for key, value in INTENT[overlay]["settings"].items():
        assert env.get(key) == value, (overlay, key, env.get(key))
    (source,) = containers(objects)["nlu"]["envFrom"]
    assert source["configMapRef"]["name"] == one_settings_map(objects)["metadata"]["name"]


def one_settings_map(objects: list[dict]) -> dict:
    (config,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("nlu-settings")
    ]
    return config


@pytest.mark.parametrize("overlay", [o for o in sorted(INTENT) if "generator_model" in INTENT[o]])
def test_the_service_asks_for_the_model_its_generator_serves(overlay):
    objects = render(overlay)
    env = settings_of(objects)
    generator = containers(objects)["generator"]
    assert served_model(generator) == INTENT[overlay]["generator_model"]
    assert env["NLU_GENERATOR_MODEL"] == INTENT[overlay]["generator_model"]


def deployments(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "Deployment"]


def selects(selector: dict, labels: dict) -> bool:
    return selector["matchLabels"].items() <= labels.items()


def test_no_replica_count_where_an_autoscaler_owns_it(rendered):
    scaled = {
        o["spec"]["scaleTargetRef"]["name"]
        for o in rendered
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    assert scaled
    for deployment in deployments(rendered):
        if deployment["metadata"]["name"] in scaled:
            assert "replicas" not in deployment["spec"], deployment["metadata"]["name"]


def test_every_container_gets_guaranteed_qos(rendered):
    for name, container in containers(rendered).items():
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], name


def test_every_deployment_has_a_budget_that_lets_one_pod_go(rendered):
    budgets = [o["spec"] for o in rendered if o["kind"] == "PodDisruptionBudget"]
    for deployment in deployments(rendered):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (budget,) = [b for b in budgets if selects(b["selector"], labels)]
        assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget
        assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_nlu_pods_spread_over_zones_and_nodes(rendered):
    pod = one(rendered, "Deployment", "nlu-service")["spec"]["template"]
    spread = pod["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    assert all(selects(c["labelSelector"], pod["metadata"]["labels"]) for c in spread)


def test_the_network_policy_admits_clients_monitoring_and_dns(rendered):
    policy = one(rendered, "NetworkPolicy", "nlu-service")["spec"]
    by_port = {rule["ports"][0]["port"]: rule.get("from", []) for rule in policy["ingress"]}
    grpc_from = [peer.get("namespaceSelector", {}).get("matchLabels") for peer in by_port["grpc"]]
    assert {"nlu-service/client": "true"} in grpc_from  # other namespaces, by label
    (monitoring,) = by_port["metrics"]
    assert monitoring["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"  # the overlays' monitoringNamespace
    }
    (dns,) = [r for r in policy["egress"] if {p["port"] for p in r["ports"]} == {53}]
    assert {"cidr": "169.254.20.10/32"} in [peer.get("ipBlock") for peer in dns["to"]]


@pytest.mark.parametrize("overlay", ["overlays/cpu-generator", "overlays/gpu"])
def test_the_generator_fits_its_pod(overlay):
    objects = render(overlay)
    generator = containers(objects)["generator"]
    env = {e["name"]: e.get("value") for e in generator.get("env", [])}
    assert env["OMP_NUM_THREADS"] == generator["resources"]["limits"]["cpu"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert generator[probe]["timeoutSeconds"] >= 5, probe
    if env.get("HF_HUB_OFFLINE") != "1":  # downloads its model: DNS and HTTPS must get out
        policy = one(objects, "NetworkPolicy", "nlu-generator")["spec"]
        ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
        assert {53, 443} <= ports


def test_vllm_gets_shared_memory_and_a_gpu():
    objects = render("overlays/gpu")
    pod = one(objects, "Deployment", "nlu-generator")["spec"]["template"]["spec"]
    (shm,) = [v for v in pod["volumes"] if v["name"] == "shm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    (generator,) = pod["containers"]
    assert {"name": "shm", "mountPath": "/dev/shm"} in generator["volumeMounts"]
    for name, container in containers(objects).items():
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1", name
