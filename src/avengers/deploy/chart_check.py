"""Offline checks of the Helm chart: lint, render and validate every manifest, for each values variant.

Nothing here needs a cluster, a ``helm`` binary or the network: the chart is linted and rendered with
helm-python-sdk (Helm's Go SDK behind a C ABI) and every rendered object is validated against a schema:

* standard Kubernetes kinds: the Kubernetes OpenAPI schemas shipped by kubernetes-validate, in strict mode
  (unknown fields are errors), for each requested Kubernetes version;
* custom resources the chart writes (KubeRay ``RayService``, prometheus-operator ``ServiceMonitor`` and
  ``PodMonitor``): the JSON schemas in ``avengers/deploy/schemas/``. They pin every field the chart
  writes (unknown fields are errors) and check pod templates, resources, security contexts and label
  selectors with the Kubernetes schemas themselves; fields of those CRDs the chart never writes are
  not described;
* the Ray Serve config inside the RayService (``serveConfigV2``): parsed as YAML and validated with Ray
  Serve's own ``ServeDeploySchema`` (when Ray is installed), its gRPC servicer functions and the
  application's import path resolved in this environment, and the application's args validated with
  ``ModelPoolConfig`` (when ``avengers.config.model_pool`` exists). A module that does not exist (yet)
  gives a warning; a module without the named callable is an error;
* each service's config file (its ConfigMap): loaded with the config class ``avengers serve <service>``
  uses (a service not yet in ``avengers.cli.serve.SERVICES`` gives a warning).

A kind with no schema at all is an error, so nothing the chart renders goes unchecked.

A second, independent checker then reads the rendered manifests of every variant: checkov's Kubernetes
policies (security contexts, resources, probes, NetworkPolicies, ...), run once over all variants from its
own virtual environment (``.venv-checkov``, made by scripts/setup.sh; or ``$AVENGERS_CHECKOV`` / ``checkov``
on PATH), offline (``--skip-download``). Every failed check is an error, except the checks in
:data:`CHECKOV_SKIPS` (chart-wide, each with its reason) and per-object skips written in the templates as
``checkov.io/skip1: CHECK=reason`` annotations. Offline checkov reports no severities (they come from its
hosted platform), so the gate is "no failed check" rather than "no medium finding".

The variants are the chart's ``ci/<name>-values.yaml`` files (``ci/default-values.yaml`` is the plain
defaults). Run ``python scripts/check_chart.py`` or ``python -m avengers.deploy.chart_check``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pydantic
import yaml

CI_VALUES_SUFFIX = "-values.yaml"
DEFAULT_RELEASE = "avengers"
DEFAULT_NAMESPACE = "avengers"
# The oldest Kubernetes minor the chart supports (Chart.yaml kubeVersion) and the newest one known.
MIN_KUBE_VERSION = "1.30"

_K8S_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
# Custom resources the chart renders -> schema file under avengers/deploy/schemas/.
CRD_SCHEMAS = {
    ("ray.io/v1", "RayService"): "rayservice-ray-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute-gateway-v1.json",
}
_SHARED_SCHEMAS = ["prometheus-common.json"]

CHECKOV_SKIPS = {
    "CKV_K8S_43": "images are set by tag (image.tag); a digest can only be pinned by whoever builds and pushes "
    "them (image.tag accepts 'tag@sha256:...')",
    "CKV_K8S_15": "IfNotPresent is the default pull policy: release tags are immutable, and Always would make "
    "every pod start depend on the registry; set image.pullPolicy: Always for mutable tags",
    "CKV_K8S_35": "the services read QDRANT_API_KEY and REDIS_URL from their environment; the values come from "
    "Secrets by secretKeyRef and never appear in the manifests",
}
"""checkov checks skipped for the whole chart, and why (docs/HELM.md repeats them)."""
CHECKOV_ENV = "AVENGERS_CHECKOV"


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """One rendered Kubernetes object and the template it came from."""

    template: str
    doc: dict[str, Any]

    @property
    def api_version(self) -> str:
        return str(self.doc.get("apiVersion", ""))

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.doc.get("metadata") or {}).get("name", ""))

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} ({self.template})"


@dataclass(frozen=True)
class Finding:
    """A problem or a note about one variant: severity "error", "warning" or "info"."""

    severity: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity.upper():7} {self.where}: {self.message}"


@dataclass
class Rendered:
    """A chart rendered with one set of values."""

    manifests: list[Manifest]
    notes: str

    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m.kind == kind]

    def get(self, kind: str, name: str) -> Manifest:
        for m in self.manifests:
            if m.kind == kind and m.name == name:
                return m
        raise KeyError(f"no {kind}/{name} in the rendered chart")


@dataclass
class VariantReport:
    """Everything checked for one values variant."""

    name: str
    values_file: Path | None
    findings: list[Finding] = field(default_factory=list)
    rendered: Rendered | None = None
    validated: dict[str, int] = field(default_factory=dict)
    """How many objects each validator accepted, e.g. {"kubernetes": 21, "crd": 2, "serve-config": 1}."""

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


# --- values and variants -----------------------------------------------------------------------


def chart_variants(chart_dir: Path) -> dict[str, Path]:
    """The chart's CI variants: name -> ``ci/<name>-values.yaml``, sorted by name."""
    ci = Path(chart_dir) / "ci"
    files = sorted(ci.glob(f"*{CI_VALUES_SUFFIX}")) if ci.is_dir() else []
    return {f.name[: -len(CI_VALUES_SUFFIX)]: f for f in files}


def load_values(path: Path | None) -> dict[str, Any]:
    """A values file as a dict (an empty file is no overrides)."""
    if path is None:
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a values file must hold a mapping, not {type(data).__name__}")  # noqa: TRY004 (bad content)
    return data


# --- helm --------------------------------------------------------------------------------------


def _helm():
    try:
        import helm_python
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("helm-python-sdk is not installed: pip install 'avengers[deploy]'") from exc
    return helm_python


def validate_values(chart_dir: Path, values: dict[str, Any]) -> None:
    """Check values against the chart's values.schema.json (merged with the defaults, as an install does).

    Raises:
        ValueError: naming the offending key and constraint.
    """
    helm = _helm()
    with helm.Chart.load(str(chart_dir)) as chart:
        try:
            chart.validate_schema(chart.merge_values(values))
        except helm.HelmValuesError as exc:
            raise ValueError(str(exc)) from exc


def lint_chart(chart_dir: Path, values: dict[str, Any], kube_version: str | None = None) -> list[Finding]:
    """``helm lint --strict`` with these values (schema included); info-level notes are kept as info."""
    helm = _helm()
    report = helm.lint(
        str(chart_dir),
        values,
        strict=True,
        kube_version=f"v{_full_version(kube_version)}" if kube_version else None,
    )
    severities = {0: "info", 1: "info", 2: "warning", 3: "error"}
    findings = [
        Finding(
            severities.get(int(m.get("severity", 3)), "error"),
            f"lint {m.get('path', '')}",
            m.get("error", "").strip(),
        )
        for m in report.get("messages", [])
    ]
    # Strict lint turns warnings into failures: report them as errors.
    return [Finding("error", f.where, f.message) if f.severity == "warning" else f for f in findings]


def render_chart(
    chart_dir: Path,
    values: dict[str, Any],
    *,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
) -> Rendered:
    """Render the chart offline (as ``helm template``) and parse every manifest.

    Raises:
        ValueError: if the values break the schema or a template fails (e.g. a ``required`` value).
    """
    helm = _helm()
    with helm.Chart.load(str(chart_dir)) as chart:
        try:
            output = chart.render(values, name=release, namespace=namespace, is_install=True)
        except (helm.HelmValuesError, helm.HelmRenderError) as exc:
            raise ValueError(str(exc)) from exc
    manifests: list[Manifest] = []
    notes = ""
    for template, text in sorted(output.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ValueError(f"{template}: rendered a {type(doc).__name__}, not a Kubernetes object")  # noqa: TRY004
            manifests.append(Manifest(template, doc))
    return Rendered(manifests, notes)


# --- schemas -----------------------------------------------------------------------------------


def _full_version(version: str) -> str:
    version = version.removeprefix("v")
    return version if version.count(".") >= 2 else f"{version}.0"


def supported_kube_versions() -> list[str]:
    import kubernetes_validate.utils as kvu

    return sorted(
        {v.rsplit(".", 1)[0] for v in kvu.all_versions()}, key=lambda v: tuple(map(int, v.split(".")))
    )


def default_kube_versions() -> list[str]:
    """The oldest Kubernetes minor the chart supports and the newest kubernetes-validate knows."""
    return sorted(
        {MIN_KUBE_VERSION, supported_kube_versions()[-1]}, key=lambda v: tuple(map(int, v.split(".")))
    )


def _schema_dir(version: str) -> str:
    """kubernetes-validate's strict schema directory for a Kubernetes version (newest not after it)."""
    import kubernetes_validate.utils as kvu

    wanted = tuple(map(int, version.removeprefix("v").split(".")[:2]))
    known = [v for v in kvu.all_versions() if tuple(map(int, v.split(".")[:2])) <= wanted]
    if not known:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    return f"v{known[-1]}-local-strict"


@cache
def _crd_validator(schema_file: str, kube_version: str):
    """A Draft 2020-12 validator for one CRD schema, resolving Kubernetes definitions of that version."""
    import jsonschema
    import kubernetes_validate.utils as kvu
    from referencing import Registry, Resource

    definitions = kvu.schema_contents(
        f"kubernetes-json-schema/{_schema_dir(kube_version)}/_definitions.json", kube_version
    )
    registry: Registry = Registry().with_resource(_K8S_DEFINITIONS_ID, Resource.from_contents(definitions))
    for name in [*CRD_SCHEMAS.values(), *_SHARED_SCHEMAS]:
        contents = _load_schema(name)
        registry = registry.with_resource(contents["$id"], Resource.from_contents(contents))
    return jsonschema.Draft202012Validator(_load_schema(schema_file), registry=registry)


@cache
def _load_schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("avengers.deploy").joinpath("schemas", name).read_text())


def _path(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<root>"


def validate_manifest(manifest: Manifest, kube_versions: Sequence[str]) -> tuple[str, list[str]]:
    """Validate one object for every Kubernetes version; returns (validator used, error messages)."""
    import kubernetes_validate

    errors: list[str] = []
    crd = CRD_SCHEMAS.get((manifest.api_version, manifest.kind))
    for version in kube_versions:
        if crd is not None:
            validator = _crd_validator(crd, _full_version(version))
            for error in sorted(validator.iter_errors(manifest.doc), key=lambda e: list(e.absolute_path)):
                errors.append(f"k8s {version}: {_path(error)}: {error.message}")
            continue
        try:
            kubernetes_validate.validate(manifest.doc, _full_version(version), strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"k8s {version}: {_path(error)}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            errors.append(f"no schema for {manifest.api_version} {manifest.kind}: {error.message}")
            break
    return ("crd" if crd else "kubernetes"), errors


# --- the Ray Serve config ----------------------------------------------------------------------


def serve_config(rayservice: Manifest) -> dict[str, Any]:
    """The parsed serveConfigV2 of a RayService."""
    text = rayservice.doc.get("spec", {}).get("serveConfigV2", "")
    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ValueError("serveConfigV2 is not a YAML mapping")  # noqa: TRY004 (bad content)
    return config


def _resolve(dotted: str) -> Any:
    """Import ``pkg.module.attr`` or ``pkg.module:attr``."""
    module, _, attr = dotted.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), attr)


def validate_serve_config(rayservice: Manifest) -> list[Finding]:
    """Check the Serve config of a RayService in this environment (see the module docstring)."""
    where = f"{rayservice} serveConfigV2"
    try:
        config = serve_config(rayservice)
    except (yaml.YAMLError, ValueError) as exc:
        return [Finding("error", where, f"not valid YAML: {exc}")]
    findings: list[Finding] = []
    try:
        from ray.serve.schema import ServeDeploySchema
    except ImportError:
        findings.append(
            Finding("info", where, "Ray is not installed: not checked with Ray Serve's ServeDeploySchema")
        )
    else:
        try:
            ServeDeploySchema.model_validate(config)
        except pydantic.ValidationError as exc:
            findings.append(Finding("error", where, f"Ray Serve rejects it: {exc}"))
    for function in (config.get("grpc_options") or {}).get("grpc_servicer_functions", []):
        try:
            _resolve(function)
        except (ImportError, AttributeError, ValueError) as exc:
            findings.append(
                Finding("error", where, f"gRPC servicer function {function!r} does not resolve: {exc}")
            )
    for app in config.get("applications", []):
        findings.extend(_check_application(app, where))
    return findings


def _check_application(app: dict[str, Any], where: str) -> list[Finding]:
    findings: list[Finding] = []
    import_path = str(app.get("import_path", ""))
    module_name, _, attr = import_path.partition(":")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        # Not an error while the module is still being written: the pool image would fail to deploy, so say it.
        findings.append(
            Finding(
                "warning",
                where,
                f"import_path module {module_name!r} does not exist in this checkout: not checked",
            )
        )
    else:
        try:
            if not callable(getattr(importlib.import_module(module_name), attr)):
                findings.append(Finding("error", where, f"import_path {import_path!r} is not callable"))
        except (ImportError, AttributeError) as exc:
            findings.append(Finding("error", where, f"import_path {import_path!r} does not resolve: {exc}"))
    try:
        from avengers.config.model_pool import ModelPoolConfig
    except ImportError:
        findings.append(Finding("info", where, "avengers.config.model_pool is missing: args not checked"))
    else:
        try:
            ModelPoolConfig.model_validate(app.get("args") or {})
        except pydantic.ValidationError as exc:
            findings.append(Finding("error", where, f"args are not a valid ModelPoolConfig: {exc}"))
    return findings


# --- the services' config files -----------------------------------------------------------------


def validate_service_config(configmap: Manifest) -> list[Finding]:
    """Check a service's ConfigMap (``<service>.yaml``) with that service's config class, as
    ``avengers serve <service> --config`` will load it. ConfigMaps of other components pass through."""
    component = (configmap.doc.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component", "")
    text = (configmap.doc.get("data") or {}).get(f"{component}.yaml")
    if text is None:
        return []
    from avengers.cli.serve import SERVICES, resolve

    where = f"{configmap} {component}.yaml"
    if component not in SERVICES:
        return [
            Finding(
                "warning",
                where,
                f"`avengers serve {component}` is not available in this checkout: not checked",
            )
        ]
    try:
        resolve(SERVICES[component].config).model_validate(yaml.safe_load(text) or {})
    except (pydantic.ValidationError, yaml.YAMLError) as exc:
        return [Finding("error", where, f"not a valid {SERVICES[component].config} config: {exc}")]
    return []


# --- everything --------------------------------------------------------------------------------


def check_values(
    chart_dir: Path,
    name: str,
    values: dict[str, Any],
    *,
    values_file: Path | None = None,
    kube_versions: Sequence[str] | None = None,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
) -> VariantReport:
    """Lint, render and validate the chart with one set of values."""
    versions = list(kube_versions or default_kube_versions())
    report = VariantReport(name=name, values_file=values_file)
    report.findings.extend(lint_chart(chart_dir, values, versions[-1]))
    try:
        report.rendered = render_chart(chart_dir, values, release=release, namespace=namespace)
    except ValueError as exc:
        report.findings.append(Finding("error", "render", str(exc)))
        return report
    if not report.rendered.manifests:
        report.findings.append(Finding("error", "render", "the chart rendered no objects"))
    for manifest in report.rendered.manifests:
        validator, errors = validate_manifest(manifest, versions)
        report.findings.extend(Finding("error", str(manifest), e) for e in errors)
        if not errors:
            report.validated[validator] = report.validated.get(validator, 0) + 1
        if manifest.kind == "ConfigMap":
            config_findings = validate_service_config(manifest)
            report.findings.extend(config_findings)
            if not config_findings:
                report.validated["service-config"] = report.validated.get("service-config", 0) + 1
        if manifest.kind == "RayService":
            serve_findings = validate_serve_config(manifest)
            report.findings.extend(serve_findings)
            if not any(f.severity == "error" for f in serve_findings):
                report.validated["serve-config"] = report.validated.get("serve-config", 0) + 1
    return report


def find_checkov(chart_dir: Path | None = None) -> str | None:
    """The checkov executable: ``$AVENGERS_CHECKOV``, the repository's ``.venv-checkov``, or ``checkov`` on PATH."""
    import os
    import shutil

    configured = os.environ.get(CHECKOV_ENV)
    if configured:
        return configured
    if chart_dir is not None:
        local = Path(chart_dir).resolve().parent.parent / ".venv-checkov" / "bin" / "checkov"
        if local.is_file():
            return str(local)
    return shutil.which("checkov")


def run_checkov(reports: Sequence[VariantReport], checkov: str, timeout: float = 600.0) -> None:
    """Run checkov once over the rendered manifests of every report and add each failed check to its report
    as an error (and ``validated["checkov"]``: the objects checkov checked without a failure)."""
    import os
    import subprocess
    import tempfile

    rendered = {r.name: r for r in reports if r.rendered is not None}
    if not rendered:
        return
    with tempfile.TemporaryDirectory(prefix="avengers-checkov-") as tmp:
        for name, report in rendered.items():
            docs = [m.doc for m in report.rendered.manifests]
            (Path(tmp) / f"{name}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        command = [
            checkov, "--directory", tmp, "--framework", "kubernetes", "--skip-download", "--quiet", "--compact",
            "--output", "json", "--skip-check", ",".join(sorted(CHECKOV_SKIPS)),
        ]
        env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            for report in rendered.values():
                report.findings.append(Finding("error", "checkov", f"could not run {checkov}: {exc}"))
            return
    try:
        results = json.loads(done.stdout) if done.stdout.strip() else []
    except json.JSONDecodeError:
        results = None
    if results is None or done.returncode not in (0, 1):
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        for report in rendered.values():
            report.findings.append(Finding("error", "checkov", f"exit {done.returncode}: {' | '.join(detail)}"))
        return
    failed: dict[str, set[str]] = {name: set() for name in rendered}
    for result in results if isinstance(results, list) else [results]:
        for check in (result.get("results") or {}).get("failed_checks", []):
            name = Path(check.get("file_path", "")).stem
            if name not in rendered:
                continue
            failed[name].add(check.get("resource", ""))
            rendered[name].findings.append(Finding(
                "error", f"checkov {check['check_id']}", f"{check.get('resource', '?')}: {check.get('check_name', '')}"
            ))
    for name, report in rendered.items():
        checked = len(report.rendered.manifests)
        report.validated["checkov"] = max(0, checked - len(failed[name]))


def check_chart(
    chart_dir: Path,
    variants: Iterable[str] | None = None,
    kube_versions: Sequence[str] | None = None,
    *,
    checkov: bool | str = True,
) -> list[VariantReport]:
    """Check every CI variant of the chart (or the named ones). ``checkov``: True runs it when it is installed
    (and says so when it is not), a path runs that executable, False skips it."""
    available = chart_variants(chart_dir)
    names = list(variants) if variants else list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; the chart has {sorted(available)}")
    reports = [
        check_values(
            chart_dir, n, load_values(available[n]), values_file=available[n], kube_versions=kube_versions
        )
        for n in names
    ]
    if checkov:
        executable = checkov if isinstance(checkov, str) else find_checkov(chart_dir)
        if executable is None:
            for report in reports:
                report.findings.append(Finding(
                    "warning", "checkov", "not installed (scripts/setup.sh makes .venv-checkov): not run"
                ))
        else:
            run_checkov(reports, executable)
    return reports


def main(argv: Sequence[str] | None = None, default_chart: Path | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chart", type=Path, default=default_chart, required=default_chart is None)
    parser.add_argument("--variant", action="append", help="a ci/<name>-values.yaml variant (default: all)")
    parser.add_argument(
        "--kube-version",
        action="append",
        help=f"Kubernetes minor to validate against (default: {default_kube_versions()})",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="list every validated object and info note"
    )
    parser.add_argument("--no-checkov", action="store_true", help="skip the checkov pass")
    parser.add_argument("--checkov", metavar="PATH", help=f"checkov executable (default: ${CHECKOV_ENV}, "
                        ".venv-checkov/bin/checkov, or checkov on PATH)")
    args = parser.parse_args(argv)
    try:
        reports = check_chart(args.chart, args.variant, args.kube_version,
                              checkov=False if args.no_checkov else (args.checkov or True))
    except ValueError as exc:
        print(f"check_chart: error: {exc}", file=sys.stderr)
        return 2
    for report in reports:
        status = "ok" if report.ok else "FAILED"
        count = len(report.rendered.manifests) if report.rendered else 0
        print(f"[{status}] {report.name}: {count} objects; validated {report.validated}")
        for finding in report.findings:
            if args.verbose or finding.severity != "info":
                print(f"    {finding}")
        if args.verbose and report.rendered:
            for manifest in report.rendered.manifests:
                print(f"    - {manifest}")
    failed = [r.name for r in reports if not r.ok]
    if failed:
        print(f"failed variants: {', '.join(failed)}")
    print(f"check_chart: {len(reports) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
