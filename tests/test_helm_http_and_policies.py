"""The chart's HTTP API, NetworkPolicies, Grafana dashboard, PrometheusRule alerts and the checkov pass,
rendered offline for each CI variant (avengers.deploy.chart_check)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from avengers.deploy import chart_check
from avengers.deploy.chart_check import Finding, Manifest, Rendered, VariantReport

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "avengers"
RELEASE = chart_check.DEFAULT_RELEASE


@pytest.fixture(scope="module")
def reports() -> dict[str, VariantReport]:
    return {r.name: r for r in chart_check.check_chart(CHART)}


def rendered(reports, variant: str) -> Rendered:
    assert reports[variant].rendered is not None, reports[variant].findings
    return reports[variant].rendered


def render(overrides: dict) -> Rendered:
    return chart_check.render_chart(CHART, overrides)


def container(manifest: Manifest) -> dict:
    return manifest.doc["spec"]["template"]["spec"]["containers"][0]


# --- the HTTP API -----------------------------------------------------------------------------------


def test_the_http_api_runs_next_to_the_gateway_with_http_probes(reports):
    r = rendered(reports, "default")
    c = container(r.get("Deployment", f"{RELEASE}-http"))
    assert c["args"] == ["serve", "http", "--port", "8080", "--config", "/etc/avengers/http.yaml"]
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert c["startupProbe"]["httpGet"]["path"] == c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8080, "scheme": "HTTP"}
    port = r.get("Service", f"{RELEASE}-http").doc["spec"]["ports"][0]
    assert (port["name"], port["port"], port["targetPort"], port["appProtocol"]) == ("http", 8080, "http", "http")
    config = yaml.safe_load(r.get("ConfigMap", f"{RELEASE}-http").doc["data"]["http.yaml"])
    assert config["model_pool"] == {"address": f"{RELEASE}-model-pool-serve-svc:9000", "application": "model_pool"}
    env = {e["name"]: e for e in c["env"]}
    assert env["AVENGERS_GATEWAY_ADDR"]["value"] == f"{RELEASE}-gateway:50050"
    assert r.get("HorizontalPodAutoscaler", f"{RELEASE}-http")
    assert not render({"http": {"enabled": False}}).of_kind("Ingress")
    assert f"{RELEASE}-http" not in [m.name for m in render({"http": {"enabled": False}}).of_kind("Deployment")]


def test_the_http_api_behind_an_ingress_and_a_gateway_api_route(reports):
    r = rendered(reports, "observability")
    (ingress,) = r.of_kind("Ingress")
    rule = ingress.doc["spec"]["rules"][0]
    assert rule["host"] == "avengers.example.com" and ingress.doc["spec"]["ingressClassName"] == "nginx"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": f"{RELEASE}-http", "port": {"name": "http"}}
    (route,) = r.of_kind("HTTPRoute")
    assert route.doc["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateway-system"}]
    assert route.doc["spec"]["rules"][0]["backendRefs"] == [{"name": f"{RELEASE}-http", "port": 8080}]
    assert route.doc["spec"]["rules"][0]["matches"][0]["path"] == {"type": "PathPrefix", "value": "/v1"}
    config = yaml.safe_load(r.get("ConfigMap", f"{RELEASE}-http").doc["data"]["http.yaml"])
    assert config["server"]["auth_token_env"] == "AVENGERS_HTTP_TOKEN"
    with pytest.raises(ValueError, match="parentRefs"):
        render({"http": {"httpRoute": {"enabled": True}}})


# --- NetworkPolicies --------------------------------------------------------------------------------


def policies(r: Rendered) -> dict[str, dict]:
    return {m.doc["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: m.doc["spec"]
            for m in r.of_kind("NetworkPolicy")}


def callers(spec: dict, port: int) -> list[str] | None:
    """Components admitted on ``port`` (None: any source)."""
    for rule in spec["ingress"]:
        if any(p["port"] == port for p in rule["ports"]):
            if "from" not in rule:
                return None
            return [peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "?")
                    if "podSelector" in peer else "namespace" for peer in rule["from"]]
    return []


@pytest.mark.parametrize("variant", ["default", "standalone", "observability"])
def test_every_service_admits_only_its_callers(reports, variant):
    r = rendered(reports, variant)
    p = policies(r)
    assert sorted(callers(p["embedder"], 50051)) == ["gateway", "router", "voter"]
    assert callers(p["router"], 50052) == ["gateway"] and callers(p["voter"], 50053) == ["gateway"]
    assert sorted(callers(p["redis"], 6379)) == ["gateway", "router"]
    assert sorted(callers(p["qdrant"], 6333)) == sorted(callers(p["qdrant"], 6334)) == ["router", "router-publish"]
    assert p["router-publish"]["ingress"] == []
    if variant == "standalone":
        assert sorted(callers(p["model-pool"], 9000)) == ["gateway", "http"]
    # every pod the chart creates (outside Ray) is selected by a policy
    selected = set(p)
    for m in r.manifests:
        if m.kind in ("Deployment", "StatefulSet", "Job"):
            component = m.doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            assert component in selected, m
    for spec in p.values():
        assert spec["policyTypes"] == ["Ingress"]


def test_public_entry_points_are_open_unless_api_clients_are_named(reports):
    default = policies(rendered(reports, "default"))
    assert callers(default["http"], 8080) is None and callers(default["gateway"], 50050) is None
    assert callers(default["gateway"], 9090) is None  # metrics scrapers: any source by default
    restricted = policies(rendered(reports, "observability"))
    assert callers(restricted["http"], 8080) == ["namespace", "?"]
    assert callers(restricted["gateway"], 50050) == ["http", "namespace", "?"]
    assert callers(restricted["embedder"], 9090) == ["namespace"]
    assert not render({"networkPolicy": {"enabled": False}}).of_kind("NetworkPolicy")


# --- dashboard and alerts ---------------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Every metric name the services export (counters with _total, histograms with _bucket, ...)."""
    import importlib

    from prometheus_client import REGISTRY

    for module in ("avengers.observability.metrics", "avengers.services.gateway.servicer", "avengers.services.http.app",
                   "avengers.services.router.servicer", "avengers.services.voter.servicer",
                   "avengers.serving.batching", "avengers.state"):
        importlib.import_module(module)
    return set(REGISTRY._names_to_collectors)


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bavengers_[a-z_]+", expr))


def test_grafana_dashboard_is_a_configmap_of_panels_on_metrics_the_services_export(reports):
    assert not rendered(reports, "default").of_kind("ConfigMap") or all(
        "grafana_dashboard" not in (m.doc["metadata"].get("labels") or {}) for m in rendered(reports, "default").manifests
    )
    r = rendered(reports, "observability")
    (board,) = [m for m in r.of_kind("ConfigMap") if m.name == f"{RELEASE}-dashboard"]
    assert board.doc["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board.doc["metadata"]["annotations"] == {"grafana_folder": "Avengers"}
    dashboard = json.loads(board.doc["data"]["avengers.json"])
    assert dashboard["uid"] == "avengers-overview" and len(dashboard["panels"]) >= 8
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set().union(*map(metrics_in, exprs))
    assert used <= exported_metric_names(), used - exported_metric_names()
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("error", "p99", "fallback", "cache hit", "http api"):
        assert topic in titles


def test_prometheus_rule_alerts_on_errors_latency_fallbacks_and_the_cache(reports):
    assert not rendered(reports, "default").of_kind("PrometheusRule")
    r = rendered(reports, "observability")
    (rule,) = r.of_kind("PrometheusRule")
    assert rule.doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {a["alert"]: a for a in rule.doc["spec"]["groups"][0]["rules"]}
    assert {"AvengersHighErrorRate", "AvengersHighP99Latency", "AvengersHighModelFallbackRate",
            "AvengersLowCacheHitRate"} <= set(alerts)
    assert "> 0.02" in alerts["AvengersHighErrorRate"]["expr"]  # thresholds from the values
    assert "> 45" in alerts["AvengersHighP99Latency"]["expr"]
    assert "> 0.2" in alerts["AvengersHighModelFallbackRate"]["expr"]
    assert "< 0.1" in alerts["AvengersLowCacheHitRate"]["expr"]
    used = set().union(*(metrics_in(a["expr"]) for a in alerts.values()))
    assert used <= exported_metric_names(), used - exported_metric_names()
    for alert in alerts.values():
        assert 'namespace="avengers"' in alert["expr"] and alert["annotations"]["summary"]
    with pytest.raises(ValueError, match="metrics.enabled"):
        render({"prometheusRule": {"enabled": True}, "metrics": {"enabled": False}})


# --- checkov -----------------------------------------------------------------------------------------


def test_checkov_is_installed_and_passed_every_variant(reports):
    assert chart_check.find_checkov(CHART), "scripts/setup.sh installs checkov into .venv-checkov"
    for name, report in reports.items():
        assert report.ok, [str(f) for f in report.errors]
        assert report.validated.get("checkov") == len(report.rendered.manifests), name
        assert not [f for f in report.findings if f.where.startswith("checkov")], name


def test_checkov_reports_what_it_fails():
    bad = Manifest("bad.yaml", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bad", "namespace": "avengers"},
        "spec": {"selector": {"matchLabels": {"app": "bad"}}, "template": {
            "metadata": {"labels": {"app": "bad"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:latest",
                                     "securityContext": {"privileged": True}}]}}},
    })
    report = VariantReport(name="bad", values_file=None, rendered=Rendered([bad], ""))
    chart_check.run_checkov([report], chart_check.find_checkov(CHART))
    failed = {f.where for f in report.findings if isinstance(f, Finding)}
    assert "checkov CKV_K8S_16" in failed  # privileged container
    assert "checkov CKV_K8S_8" in failed  # no liveness probe
    assert report.validated["checkov"] == 0
