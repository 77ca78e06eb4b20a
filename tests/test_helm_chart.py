"""The Helm chart (helm/avengers), rendered offline with helm-python-sdk for each CI variant.

Each variant (ci/default, ci/replay: no GPU, ci/gpu-multi: several vLLM models on GPU worker groups,
ci/standalone: the pool without Ray) is linted, rendered and validated once (avengers.deploy.chart_check); the tests then assert what the
render contains and that the validators reject what they must.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from avengers.config.model_pool import ModelPoolConfig
from avengers.deploy import chart_check, values_schema
from avengers.deploy.chart_check import Manifest, Rendered, VariantReport

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "avengers"
VARIANTS = ["default", "replay", "gpu-multi", "standalone", "observability"]
RAY_VARIANTS = ["default", "replay", "gpu-multi", "observability"]
SERVICES = {
    "gateway": "avengers.v1.Gateway",
    "embedder": "avengers.v1.Embedder",
    "router": "avengers.v1.Router",
    "voter": "avengers.v1.Voter",
}
RELEASE = chart_check.DEFAULT_RELEASE  # release "avengers": resource names are "avengers-<component>"


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reports() -> dict[str, VariantReport]:
    return {r.name: r for r in chart_check.check_chart(CHART)}


@pytest.fixture(scope="module")
def variant_values() -> dict[str, dict[str, Any]]:
    """The merged values (chart defaults + the variant's file) each variant was rendered with."""
    import helm_python

    files = chart_check.chart_variants(CHART)
    with helm_python.Chart.load(str(CHART)) as chart:
        return {name: chart.merge_values(chart_check.load_values(files[name])) for name in VARIANTS}


def rendered(reports: dict[str, VariantReport], variant: str) -> Rendered:
    assert reports[variant].rendered is not None, reports[variant].findings
    return reports[variant].rendered


def render(overrides: dict[str, Any]) -> Rendered:
    return chart_check.render_chart(CHART, overrides)


def pod_specs(manifest: Manifest) -> list[dict[str, Any]]:
    """Pod specs of a workload: Deployment/StatefulSet/Job template, or the RayService head and workers."""
    spec = manifest.doc["spec"]
    if manifest.kind == "RayService":
        cluster = spec["rayClusterConfig"]
        groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
        return [g["template"]["spec"] for g in groups]
    return [spec["template"]["spec"]]


def containers(manifest: Manifest) -> list[dict[str, Any]]:
    return [c for pod in pod_specs(manifest) for c in pod.get("containers", [])]


def workloads(r: Rendered) -> list[Manifest]:
    return [m for m in r.manifests if m.kind in {"Deployment", "StatefulSet", "Job", "RayService"}]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def serve_config(r: Rendered) -> dict[str, Any]:
    (rayservice,) = r.of_kind("RayService")
    return chart_check.serve_config(rayservice)


def pool_config(r: Rendered) -> dict[str, Any]:
    """The model-pool config the chart runs: the Serve app's args, or the standalone server's config file."""
    if r.of_kind("RayService"):
        return serve_config(r)["applications"][0]["args"]
    return yaml.safe_load(r.get("ConfigMap", f"{RELEASE}-model-pool").doc["data"]["model-pool.yaml"])


def strings_in(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)
    elif node is not None:
        yield str(node)


# --- lint, render, validate ---------------------------------------------------------------------


def test_the_chart_has_its_ci_variants():
    assert sorted(chart_check.chart_variants(CHART)) == sorted(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_lints_renders_and_validates_without_errors(reports, variant):
    report = reports[variant]
    assert report.ok, "\n".join(map(str, report.errors))
    # Every object went through a validator: Kubernetes schemas or the shipped CRD schemas.
    assert report.validated["kubernetes"] + report.validated.get("crd", 0) == len(report.rendered.manifests)
    assert report.validated.get("serve-config", 0) == (variant in RAY_VARIANTS)
    assert report.validated["service-config"] >= 3


@pytest.mark.parametrize("variant", VARIANTS)
def test_standard_kinds_pass_kubernetes_validate_for_every_supported_version(reports, variant):
    import kubernetes_validate

    standard = [
        m
        for m in rendered(reports, variant).manifests
        if (m.api_version, m.kind) not in chart_check.CRD_SCHEMAS
    ]
    assert {m.kind for m in standard} >= {"Deployment", "Service", "ConfigMap", "ServiceAccount", "Job"}
    for version in chart_check.default_kube_versions():
        for manifest in standard:
            kubernetes_validate.validate(manifest.doc, f"{version}.0", strict=True)


def test_validators_reject_broken_objects(reports):
    r = rendered(reports, "gpu-multi")
    versions = chart_check.default_kube_versions()

    deployment = copy.deepcopy(r.get("Deployment", f"{RELEASE}-embedder").doc)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "fifty"
    _, errors = chart_check.validate_manifest(Manifest("t", deployment), versions)
    assert errors and "readinessProbe" in errors[0]

    rayservice = copy.deepcopy(r.get("RayService", f"{RELEASE}-model-pool").doc)
    rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
        "gpus"
    ] = 1
    rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"]["upscalingMode"] = "Fast"
    _, errors = chart_check.validate_manifest(Manifest("t", rayservice), versions)
    assert any("containers.0" in e and "gpus" in e for e in errors)
    assert any("upscalingMode" in e for e in errors)

    monitor = copy.deepcopy(r.get("ServiceMonitor", f"{RELEASE}-metrics").doc)
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    _, errors = chart_check.validate_manifest(Manifest("t", monitor), versions)
    assert errors and "interval" in errors[0]

    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    _, errors = chart_check.validate_manifest(Manifest("t", unknown), versions)
    assert errors and "no schema" in errors[0]


def test_serve_config_check_rejects_bad_args_and_unknown_servicer(reports):
    rayservice = copy.deepcopy(rendered(reports, "replay").get("RayService", f"{RELEASE}-model-pool").doc)
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    config["applications"][0]["args"]["models"][0]["backend"] = "tgi"
    config["grpc_options"]["grpc_servicer_functions"].append("avengers.v1.nothing_pb2_grpc.add_X_to_server")
    rayservice["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    messages = [
        f.message
        for f in chart_check.validate_serve_config(Manifest("t", rayservice))
        if f.severity == "error"
    ]
    assert any("not a valid ModelPoolConfig" in m and "backend" in m for m in messages)
    assert any("nothing_pb2_grpc" in m for m in messages)


def test_serve_config_check_resolves_the_import_path(reports):
    rayservice = copy.deepcopy(rendered(reports, "default").get("RayService", f"{RELEASE}-model-pool").doc)

    def findings_for(import_path: str) -> list[chart_check.Finding]:
        config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
        config["applications"][0]["import_path"] = import_path
        rayservice["spec"]["serveConfigV2"] = yaml.safe_dump(config)
        return [
            f
            for f in chart_check.validate_serve_config(Manifest("t", rayservice))
            if "import_path" in f.message
        ]

    assert findings_for("avengers.services.model_pool.server:start_model_pool_server") == []
    (missing_attr,) = findings_for("avengers.services.model_pool.server:no_such_builder")
    assert missing_attr.severity == "error"
    (missing_module,) = findings_for("avengers.services.model_pool.not_written_yet:build_app")
    assert missing_module.severity == "warning"


def test_check_chart_script_passes_every_variant():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_chart.py")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"check_chart: {len(VARIANTS)} passed, 0 failed" in result.stdout


# --- the four gRPC services ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_service_has_a_deployment_and_a_service_on_its_port(reports, variant_values, variant):
    r = rendered(reports, variant)
    values = variant_values[variant]
    for service in SERVICES:
        port = values[service]["port"]
        name = f"{RELEASE}-{service}"
        (container,) = containers(r.get("Deployment", name))
        assert container["args"] == [
            "serve",
            service,
            "--port",
            str(port),
            "--config",
            f"/etc/avengers/{service}.yaml",
        ]
        assert {"name": "grpc", "containerPort": port, "protocol": "TCP"} in container["ports"]
        svc_ports = {p["name"]: p for p in r.get("Service", name).doc["spec"]["ports"]}
        assert svc_ports["grpc"]["port"] == port and svc_ports["grpc"]["appProtocol"] == "grpc"
        assert svc_ports["metrics"]["port"] == values["metrics"]["port"]
        # The config file the command reads is the service's ConfigMap, mounted at /etc/avengers.
        configmap = r.get("ConfigMap", name).doc
        config = yaml.safe_load(configmap["data"][f"{service}.yaml"])
        if service == "gateway":  # the chart tells the gateway the model pool's Serve application name
            assert config.pop("downstream") == {"model_pool_application": values["modelPool"]["appName"]}
        assert config == values[service]["config"]


def test_default_ports_and_addresses_follow_the_architecture(reports):
    r = rendered(reports, "default")
    env = env_of(containers(r.get("Deployment", f"{RELEASE}-gateway"))[0])
    assert env["AVENGERS_GATEWAY_ADDR"]["value"] == f"{RELEASE}-gateway:50050"
    assert env["AVENGERS_EMBEDDER_ADDR"]["value"] == f"{RELEASE}-embedder:50051"
    assert env["AVENGERS_ROUTER_ADDR"]["value"] == f"{RELEASE}-router:50052"
    assert env["AVENGERS_VOTER_ADDR"]["value"] == f"{RELEASE}-voter:50053"
    # KubeRay names the RayService's serve Service "<name>-serve-svc" and exposes the head port named "serve".
    assert env["AVENGERS_MODEL_POOL_ADDR"]["value"] == f"{RELEASE}-model-pool-serve-svc:9000"
    gateway_config = yaml.safe_load(r.get("ConfigMap", f"{RELEASE}-gateway").doc["data"]["gateway.yaml"])
    assert gateway_config["downstream"]["model_pool_application"] == "model_pool"
    assert env["QDRANT_URL"]["value"] == f"http://{RELEASE}-qdrant:6333"
    assert env["REDIS_URL"]["value"] == f"redis://:$(REDIS_PASSWORD)@{RELEASE}-redis:6379/0"
    head = r.get("RayService", f"{RELEASE}-model-pool").doc["spec"]["rayClusterConfig"]["headGroupSpec"]
    head_ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert head_ports["serve"] == 9000


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_service_container_has_grpc_health_probes(reports, variant_values, variant):
    r = rendered(reports, variant)
    for service, grpc_name in SERVICES.items():
        port = variant_values[variant][service]["port"]
        (container,) = containers(r.get("Deployment", f"{RELEASE}-{service}"))
        assert container["readinessProbe"]["grpc"] == {"port": port, "service": grpc_name}
        mode = variant_values[variant][service]["probes"]["liveness"]
        for probe in ("startupProbe", "livenessProbe"):
            if mode == "grpc":
                assert container[probe]["grpc"] == {"port": port, "service": ""}
            else:
                assert container[probe]["tcpSocket"] == {"port": port}
    # The router reports NOT_SERVING until a router is published: it must not be restarted for that.
    assert variant_values[variant]["router"]["probes"]["liveness"] == "tcp"
    assert variant_values[variant]["embedder"]["probes"]["liveness"] == "grpc"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_requests_cpu_and_memory(reports, variant):
    for workload in workloads(rendered(reports, variant)):
        for container in containers(workload):
            requests = container.get("resources", {}).get("requests", {})
            assert "cpu" in requests and "memory" in requests, f"{workload}: {container['name']}"
            assert "memory" in container["resources"].get("limits", {}), f"{workload}: {container['name']}"


def test_replicas_and_hpa_bounds(reports, variant_values):
    default = rendered(reports, "default")
    for service in SERVICES:
        name = f"{RELEASE}-{service}"
        hpa = default.get("HorizontalPodAutoscaler", name).doc["spec"]
        bounds = variant_values["default"][service]["autoscaling"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (bounds["minReplicas"], bounds["maxReplicas"])
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert (
            hpa["metrics"][0]["resource"]["target"]["averageUtilization"]
            == bounds["targetCPUUtilizationPercentage"]
        )
        # The HPA owns the replica count.
        assert "replicas" not in default.get("Deployment", name).doc["spec"]
        assert default.get("PodDisruptionBudget", name).doc["spec"]["maxUnavailable"] == 1

    gateway_hpa = (
        rendered(reports, "gpu-multi").get("HorizontalPodAutoscaler", f"{RELEASE}-gateway").doc["spec"]
    )
    assert (gateway_hpa["minReplicas"], gateway_hpa["maxReplicas"]) == (3, 20)
    assert [m["resource"]["name"] for m in gateway_hpa["metrics"]] == ["cpu", "memory"]
    pdb = rendered(reports, "gpu-multi").get("PodDisruptionBudget", f"{RELEASE}-gateway").doc["spec"]
    assert pdb["minAvailable"] == 2 and "maxUnavailable" not in pdb

    replay = rendered(reports, "replay")
    assert not replay.of_kind("HorizontalPodAutoscaler") and not replay.of_kind("PodDisruptionBudget")
    for service in SERVICES:
        assert replay.get("Deployment", f"{RELEASE}-{service}").doc["spec"]["replicas"] == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_run_as_non_root_with_read_only_root_filesystems(reports, variant):
    for workload in workloads(rendered(reports, variant)):
        for pod in pod_specs(workload):
            for container in pod["containers"]:
                context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
                assert context.get("runAsNonRoot") is True, f"{workload}: {container['name']}"
                assert context.get("allowPrivilegeEscalation") is False, f"{workload}: {container['name']}"
                assert context["capabilities"]["drop"] == ["ALL"]
                # Ray needs a writable root filesystem; everything else gets a read-only one.
                if workload.kind != "RayService":
                    assert context.get("readOnlyRootFilesystem") is True, f"{workload}: {container['name']}"


# --- the model pool -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", RAY_VARIANTS)
def test_serve_config_lists_the_models_with_gpus_and_autoscaling_bounds(reports, variant_values, variant):
    pool = variant_values[variant]["modelPool"]
    config = serve_config(rendered(reports, variant))
    assert config["grpc_options"]["port"] == pool["grpcPort"] == 9000
    assert config["grpc_options"]["grpc_servicer_functions"] == [
        "avengers.v1.model_pool_pb2_grpc.add_ModelPoolServicer_to_server"
    ]
    (app,) = config["applications"]
    assert app["name"] == app["args"]["app_name"] == "model_pool"
    assert app["import_path"] == "avengers.services.model_pool.app:build_app"
    served = {m["name"]: m for m in app["args"]["models"]}
    assert list(served) == [m["name"] for m in pool["models"]]
    for model in pool["models"]:
        entry = served[model["name"]]
        assert entry["backend"] == model["backend"]
        assert entry.get("resources", {}).get("num_gpus", 0) == model.get("resources", {}).get("num_gpus", 0)
        assert entry["autoscaling"]["min_replicas"] == model["autoscaling"]["min_replicas"]
        assert entry["autoscaling"]["max_replicas"] == model["autoscaling"]["max_replicas"]
    # The args are a valid model-pool config, and Ray Serve accepts the whole document.
    parsed = ModelPoolConfig.model_validate(app["args"])
    assert parsed.server.port == config["grpc_options"]["port"]
    assert parsed.http_port == config["http_options"]["port"] == 8000
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)


def test_gpu_multi_pool_serves_several_vllm_models_on_gpu_worker_groups(reports):
    r = rendered(reports, "gpu-multi")
    pool = ModelPoolConfig.model_validate(serve_config(r)["applications"][0]["args"])
    assert [m.backend for m in pool.models] == ["vllm"] * 4
    assert {m.name: m.resources.num_gpus for m in pool.models} == {
        "qwen2.5-7b-instruct": 1,
        "llama-3.1-8b-instruct": 1,
        "mistral-7b-instruct": 1,
        "deepseek-coder-6.7b": 2,
    }
    assert {m.name: (m.autoscaling.min_replicas, m.autoscaling.max_replicas) for m in pool.models} == {
        "qwen2.5-7b-instruct": (1, 4),
        "llama-3.1-8b-instruct": (1, 3),
        "mistral-7b-instruct": (0, 2),
        "deepseek-coder-6.7b": (1, 2),
    }
    assert pool.model("deepseek-coder-6.7b").vllm.tensor_parallel_size == 2
    assert pool.grpc_request_timeout_s == 120
    cluster = r.get("RayService", f"{RELEASE}-model-pool").doc["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert {name: (g["minReplicas"], g["maxReplicas"]) for name, g in groups.items()} == {
        "gpu-1x": (2, 9),
        "gpu-2x": (1, 2),
    }
    for name, gpus in {"gpu-1x": "1", "gpu-2x": "2"}.items():
        (worker,) = groups[name]["template"]["spec"]["containers"]
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == gpus
        assert worker["image"] == "registry.example.com/avengers/avengers-pool-gpu:0.1.0"
        assert env_of(worker)["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
        assert groups[name]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
        volumes = {v["name"]: v for v in groups[name]["template"]["spec"]["volumes"]}
        assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "avengers-model-cache"}


def test_replay_pool_needs_no_gpu(reports):
    r = rendered(reports, "replay")
    assert "nvidia.com/gpu" not in "".join(strings_in([m.doc for m in r.manifests]))
    pool = ModelPoolConfig.model_validate(serve_config(r)["applications"][0]["args"])
    assert {m.name: m.backend for m in pool.models} == {
        "replay-qwen2.5-7b": "replay",
        "replay-llama-3.1-8b": "replay",
        "smollm2-135m": "llama_cpp",
    }
    assert all(m.resources.num_gpus == 0 for m in pool.models)
    assert pool.limits.max_prompt_chars == 16384  # extraArgs reach the app
    cluster = r.get("RayService", f"{RELEASE}-model-pool").doc["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in cluster
    (group,) = cluster["workerGroupSpecs"]
    (worker,) = group["template"]["spec"]["containers"]
    assert {"name": "replay", "mountPath": "/data/replay", "readOnly": True} in worker["volumeMounts"]


def test_models_that_cannot_fit_on_the_gpu_workers_fail_the_render():
    big = {
        "name": "big",
        "backend": "vllm",
        "model_id": "x/y",
        "resources": {"num_gpus": 4},
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
    }
    with pytest.raises(ValueError, match="need 4 GPUs .* at most 2"):
        render({"modelPool": {"models": [big]}})


def test_external_model_pool_qdrant_and_redis():
    r = render(
        {
            "modelPool": {"enabled": False, "externalAddr": "pool.models.svc:9000"},
            "qdrant": {"enabled": False, "external": {"url": "https://qdrant.example:6333"}},
            "redis": {"enabled": False, "external": {"url": "rediss://redis.example:6380/2"}},
        }
    )
    assert not r.of_kind("RayService") and not r.of_kind("StatefulSet")
    assert [m.name for m in r.of_kind("Deployment")] == [
        f"{RELEASE}-{s}" for s in ("embedder", "gateway", "http", "router", "voter")
    ]
    env = env_of(containers(r.get("Deployment", f"{RELEASE}-router"))[0])
    assert env["AVENGERS_MODEL_POOL_ADDR"]["value"] == "pool.models.svc:9000"
    assert env["QDRANT_URL"]["value"] == "https://qdrant.example:6333"
    assert env["REDIS_URL"]["value"] == "rediss://:$(REDIS_PASSWORD)@redis.example:6380/2"
    with pytest.raises(ValueError, match="externalAddr"):
        render({"modelPool": {"enabled": False}})


# --- Qdrant, Redis, the router publish Job --------------------------------------------------------


def test_in_chart_qdrant_is_a_statefulset_with_a_volume_and_redis_a_cache(reports):
    r = rendered(reports, "default")
    qdrant = r.get("StatefulSet", f"{RELEASE}-qdrant").doc["spec"]
    (claim,) = qdrant["volumeClaimTemplates"]
    assert (
        claim["metadata"]["name"] == "storage" and claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    )
    (container,) = qdrant["template"]["spec"]["containers"]
    assert {"name": "storage", "mountPath": "/qdrant/storage"} in container["volumeMounts"]
    assert env_of(container)["QDRANT__SERVICE__API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "avengers-qdrant",
        "key": "api-key",
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (redis,) = containers(r.get("Deployment", f"{RELEASE}-redis"))
    assert redis["args"][redis["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert redis["args"][redis["args"].index("--maxmemory-policy") + 1] == "allkeys-lru"


def test_router_publish_job_reads_the_router_from_a_volume(reports):
    for variant, path in {
        "default": "/var/lib/avengers/router-source",
        "replay": "/var/lib/avengers/router-source/routers/k16",
    }.items():
        job = rendered(reports, variant).get("Job", f"{RELEASE}-router-publish").doc
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["publish", "--router", path]
        assert env_of(container)["QDRANT_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "avengers-qdrant"
        router_volume = next(v for v in pod["volumes"] if v["name"] == "router")
        assert "persistentVolumeClaim" in router_volume
    assert not render({"routerPublish": {"enabled": False}}).of_kind("Job")


# --- secrets ---------------------------------------------------------------------------------------

SECRET_ENV = re.compile(r"(PASSWORD|API_KEY|TOKEN|SECRET|AUTH)", re.IGNORECASE)
SECRET_KEY = re.compile(r"(password|passwd|api[_-]?key|token|secret)$", re.IGNORECASE)


def secret_literals(node: Any, where: str = "") -> list[str]:
    """Places where a credential is written as a literal: a secret-like key with a value, a URL with a
    password, or a --requirepass argument. ConfigMap data and serveConfigV2 are parsed and searched too."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and SECRET_KEY.search(str(key)) and value:
                found.append(f"{where}.{key}")
            if key in ("data", "serveConfigV2") and value:
                documents = value.values() if isinstance(value, dict) else [value]
                for document in documents:
                    try:
                        found += secret_literals(yaml.safe_load(document), f"{where}.{key}")
                    except yaml.YAMLError:
                        pass
            found += secret_literals(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if value == "--requirepass" and not str(node[i + 1]).startswith("$("):
                found.append(f"{where}[{i + 1}]")
            found += secret_literals(value, f"{where}[{i}]")
    elif isinstance(node, str) and re.search(r"://[^/\s:@]*:(?!\$\()[^@\s/]+@", node):
        found.append(where)
    return found


def test_secret_literal_finder_finds_literals():
    assert secret_literals({"env": [{"name": "X", "value": "redis://:hunter2@redis:6379"}]}) == [
        ".env[0].value"
    ]
    assert secret_literals({"args": ["--requirepass", "hunter2"]}) == [".args[1]"]
    assert secret_literals({"data": {"a.yaml": "store:\n  qdrant_api_key: abc\n"}}) == [
        ".data.store.qdrant_api_key"
    ]
    assert (
        secret_literals({"args": ["--requirepass", "$(REDIS_PASSWORD)"], "url": "redis://:$(P)@r:6379"}) == []
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_secrets_are_referenced_never_inlined(reports, variant):
    r = rendered(reports, variant)
    assert not r.of_kind("Secret"), "the chart must not create Secrets"
    checked = 0
    for workload in workloads(r):
        for container in containers(workload):
            for name, var in env_of(container).items():
                if SECRET_ENV.search(name):
                    assert set(var) == {"name", "valueFrom"}, f"{workload}: {name} is inlined"
                    assert "secretKeyRef" in var["valueFrom"]
                    checked += 1
    assert checked >= 4
    for manifest in r.manifests:
        assert secret_literals(manifest.doc) == [], str(manifest)


def test_redis_url_can_come_whole_from_a_secret(reports):
    env = env_of(containers(rendered(reports, "replay").get("Deployment", f"{RELEASE}-gateway"))[0])
    assert env["REDIS_URL"] == {
        "name": "REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "avengers-redis-url", "key": "redis-url"}},
    }
    assert "REDIS_PASSWORD" not in env


# --- monitoring -------------------------------------------------------------------------------------


def test_service_monitor_only_when_enabled(reports, variant_values):
    for variant in ("default", "replay"):
        assert not rendered(reports, variant).of_kind("ServiceMonitor")
        assert not rendered(reports, variant).of_kind("PodMonitor")
    r = rendered(reports, "gpu-multi")
    (monitor,) = r.of_kind("ServiceMonitor")
    assert monitor.doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor.doc["spec"]["endpoints"]
    assert (
        endpoint["port"] == "metrics" and endpoint["path"] == variant_values["gpu-multi"]["metrics"]["path"]
    )
    expression = monitor.doc["spec"]["selector"]["matchExpressions"][0]
    assert sorted(expression["values"]) == sorted([*SERVICES, "http"])
    (pod_monitor,) = r.of_kind("PodMonitor")
    assert pod_monitor.doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "model-pool"
    with pytest.raises(ValueError, match="metrics.enabled"):
        render({"serviceMonitor": {"enabled": True}, "metrics": {"enabled": False}})


# --- values.schema.json -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"gateway": {"replicas": "three"}}, "/gateway/replicas"),
        ({"embedder": {"port": 70000}}, "/embedder/port"),
        ({"router": {"probes": {"liveness": "http"}}}, "/router/probes/liveness"),
        ({"voter": {"resources": {"requests": {"cpu": "lots", "memory": "1Gi"}}}}, "/voter/resources"),
        ({"gatway": {"replicas": 1}}, "gatway"),
        ({"logLevel": "LOUD"}, "/logLevel"),
        ({"modelPool": {"models": []}}, "/modelPool/models"),
        (
            {"modelPool": {"models": [{"name": "m", "backend": "tgi", "model_id": "x"}]}},
            "/modelPool/models/0/backend",
        ),
        (
            {
                "modelPool": {
                    "models": [{"name": "m", "backend": "vllm", "model_id": "x", "vllm": {"gpu_mem": 1}}]
                }
            },
            "gpu_mem",
        ),
        ({"modelPool": {"extraArgs": {"app_name": "other"}}}, "app_name"),
        ({"modelPool": {"enabled": False}}, "externalAddr"),
        ({"qdrant": {"enabled": False}}, "/qdrant"),
        ({"qdrant": {"auth": {"enabled": True, "existingSecret": ""}}}, "/qdrant/auth"),
        ({"redis": {"external": {"url": "redis://:hunter2@redis.example:6379"}}}, "/redis/external/url"),
        ({"routerPublish": {"volume": {"name": "x", "emptyDir": {}}}}, "/routerPublish/volume"),
    ],
)
def test_values_schema_rejects_bad_values(overrides, complaint):
    with pytest.raises(ValueError) as caught:
        chart_check.validate_values(CHART, overrides)
    assert complaint in str(caught.value)
    with pytest.raises(ValueError):
        render(overrides)


@pytest.mark.parametrize("variant", VARIANTS)
def test_values_schema_accepts_the_ci_variants(variant):
    chart_check.validate_values(CHART, chart_check.load_values(chart_check.chart_variants(CHART)[variant]))


def test_model_pool_part_of_the_values_schema_is_generated_from_model_pool_config():
    assert values_schema.is_synced(CHART / "values.schema.json"), (
        "run: python -m avengers.deploy.values_schema --write helm/avengers/values.schema.json"
    )
    schema = json.loads((CHART / "values.schema.json").read_text())
    model = schema["$defs"]["modelPool.ModelConfig"]
    assert model["additionalProperties"] is False
    assert set(model["properties"]) >= {
        "name",
        "backend",
        "model_id",
        "vllm",
        "replay",
        "autoscaling",
        "resources",
    }


def test_every_value_is_in_the_docs_reference():
    """docs/HELM.md documents every key of values.yaml down to the second level."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    doc = (ROOT / "docs" / "HELM.md").read_text()
    reference = doc[doc.index("## Values reference") :]
    passed_through = {
        "commonLabels",
        "podSecurityContext",
        "containerSecurityContext",
    }  # Kubernetes objects as they are
    missing = []
    for key, value in values.items():
        prefix = "<service>" if key in SERVICES else key
        subkeys = list(value) if isinstance(value, dict) and value and key not in passed_through else []
        if not subkeys and f"`{key}`" not in reference:
            missing.append(key)
        for sub in subkeys:
            if not re.search(
                rf"`{re.escape(prefix)}\.{re.escape(sub)}[`.\[]|`{re.escape(prefix)}\.[^`]*` / [^|]*`\.{re.escape(sub)}`",
                reference,
            ):
                missing.append(f"{prefix}.{sub}")
    assert not missing, f"undocumented values: {sorted(set(missing))}"


def test_gateway_config_follows_the_pool_application_name_unless_set():
    def gateway_config(overrides):
        return yaml.safe_load(
            render(overrides).get("ConfigMap", f"{RELEASE}-gateway").doc["data"]["gateway.yaml"]
        )

    config = gateway_config(
        {"modelPool": {"appName": "pool_b"}, "gateway": {"config": {"downstream": {"route_by": "embedding"}}}}
    )
    assert config["downstream"] == {"route_by": "embedding", "model_pool_application": "pool_b"}
    config = gateway_config({"gateway": {"config": {"downstream": {"model_pool_application": "elsewhere"}}}})
    assert config["downstream"]["model_pool_application"] == "elsewhere"
    rayservice = render({"modelPool": {"appName": "pool_b"}}).get("RayService", f"{RELEASE}-model-pool")
    assert chart_check.serve_config(rayservice)["applications"][0]["name"] == "pool_b"


def test_metrics_port_is_declared_and_passed_to_the_services(reports):
    for service in SERVICES:
        (container,) = containers(rendered(reports, "default").get("Deployment", f"{RELEASE}-{service}"))
        assert env_of(container)["AVENGERS_METRICS_PORT"]["value"] == "9090"
        assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    off = render({"metrics": {"enabled": False}})
    for service in SERVICES:
        (container,) = containers(off.get("Deployment", f"{RELEASE}-{service}"))
        assert env_of(container)["AVENGERS_METRICS_PORT"]["value"] == "0"
        assert [p["name"] for p in container["ports"]] == ["grpc"]
        assert [p["name"] for p in off.get("Service", f"{RELEASE}-{service}").doc["spec"]["ports"]] == [
            "grpc"
        ]


def test_services_take_extra_volumes():
    r = render(
        {
            "router": {
                "extraVolumes": [{"name": "tls", "secret": {"secretName": "router-tls"}}],
                "extraVolumeMounts": [{"name": "tls", "mountPath": "/etc/avengers-tls", "readOnly": True}],
                "config": {
                    "server": {
                        "tls_cert_file": "/etc/avengers-tls/tls.crt",
                        "tls_key_file": "/etc/avengers-tls/tls.key",
                    }
                },
            }
        }
    )
    pod = r.get("Deployment", f"{RELEASE}-router").doc["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "router-tls"}} in pod["volumes"]
    assert {"name": "tls", "mountPath": "/etc/avengers-tls", "readOnly": True} in pod["containers"][0][
        "volumeMounts"
    ]
    (manifest,) = [m for m in r.of_kind("ConfigMap") if m.name == f"{RELEASE}-router"]
    assert chart_check.validate_service_config(manifest) == []


def test_chart_metadata_matches_what_is_validated():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "avengers"
    assert chart["kubeVersion"] == f">={chart_check.MIN_KUBE_VERSION}.0-0"
    assert chart_check.default_kube_versions()[0] == chart_check.MIN_KUBE_VERSION
    import avengers

    assert chart["appVersion"] == avengers.__version__


def test_standalone_pool_is_a_deployment_serving_the_same_config(reports, variant_values):
    r = rendered(reports, "standalone")
    values = variant_values["standalone"]["modelPool"]
    assert not r.of_kind("RayService") and not r.of_kind("PodMonitor")
    name = f"{RELEASE}-model-pool"
    (container,) = containers(r.get("Deployment", name))
    assert container["command"] == ["avengers"]
    assert container["args"] == [
        "serve",
        "model-pool",
        "--port",
        "9000",
        "--config",
        "/etc/avengers/model-pool.yaml",
    ]
    assert container["image"] == "avengers-pool-cpu:0.1.0"
    assert container["readinessProbe"]["grpc"] == {"port": 9000, "service": "avengers.v1.ModelPool"}
    assert container["startupProbe"]["failureThreshold"] == 120
    assert {"name": "replay", "mountPath": "/data/replay", "readOnly": True} in container["volumeMounts"]
    # The pool gets no store or cache credentials.
    assert not {"QDRANT_API_KEY", "REDIS_PASSWORD", "REDIS_URL"} & set(env_of(container))
    assert r.get("Deployment", name).doc["spec"]["replicas"] == 2
    assert r.get("PodDisruptionBudget", name).doc["spec"]["maxUnavailable"] == 1
    config = ModelPoolConfig.model_validate(pool_config(r))
    assert config.model_names == [m["name"] for m in values["models"]]
    assert config.server.port == 9000
    env = env_of(containers(r.get("Deployment", f"{RELEASE}-gateway"))[0])
    assert env["AVENGERS_MODEL_POOL_ADDR"]["value"] == f"{name}:9000"
    (monitor,) = r.of_kind("ServiceMonitor")
    assert "model-pool" in monitor.doc["spec"]["selector"]["matchExpressions"][0]["values"]


def test_ray_and_standalone_runtimes_run_the_same_pool_config(reports):
    models = chart_check.load_values(chart_check.chart_variants(CHART)["replay"])["modelPool"]["models"]
    ray = render({"modelPool": {"models": models, "workerGroups": []}})
    standalone = render({"modelPool": {"models": models, "runtime": "standalone"}})
    assert pool_config(ray) == pool_config(standalone)


def test_the_chart_packages_without_its_ci_files(tmp_path):
    import tarfile

    import helm_python

    archive = helm_python.package(str(CHART), destination=str(tmp_path))
    assert Path(archive).name == "avengers-0.1.0.tgz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "avengers/values.schema.json" in names and "avengers/templates/NOTES.txt" in names
    assert not [n for n in names if n.startswith("avengers/ci/")]
    with helm_python.Chart.load(archive) as chart:
        assert any(t.endswith("model-pool-rayservice.yaml") for t in chart.render(name="x"))


@pytest.mark.parametrize("variant", RAY_VARIANTS)
def test_serve_config_matches_the_model_pool_renderer(reports, variant):
    """The chart's serveConfigV2 is what `avengers pool serve-config` renders for the same pool config, except
    the per-model `deployments` overrides, which the chart leaves to the app (build_app applies the same
    options from its args), and the chart's logging_config."""
    from avengers.services.model_pool.serve_config import render_serve_config

    chart = serve_config(rendered(reports, variant))
    pool = ModelPoolConfig.model_validate(chart["applications"][0]["args"])
    expected = render_serve_config(pool)
    assert chart["grpc_options"] == expected["grpc_options"]
    assert chart["http_options"] == expected["http_options"]
    assert chart["proxy_location"] == expected["proxy_location"]
    (app,), (expected_app,) = chart["applications"], expected["applications"]
    assert {k: v for k, v in app.items() if k != "args"} == {
        k: v for k, v in expected_app.items() if k not in ("args", "deployments")
    }
    assert ModelPoolConfig.model_validate(expected_app["args"]) == pool
    assert [d["name"] for d in expected_app["deployments"]][1:] == [m.deployment_name for m in pool.models]
