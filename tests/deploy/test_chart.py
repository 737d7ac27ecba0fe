"""The Helm chart, rendered by a real helm (`make helm` builds it from the Go module proxy):
lint, Kubernetes schemas, and what a platform team relies on (probes, ports, selectors,
image tags, security, settings names)."""

from __future__ import annotations

import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import msgspec
import pytest
import yaml

from fraud_devtools.chart_schema import CLASSES, NOT_DEPLOYED, SCHEMA, render
from serving.app import create_app
from serving.settings import ServingSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "fraudscale"
HELM = ROOT / ".tools" / "bin" / "helm"
KUBERNETES = "1.30.0"
VALUE_SETS = {
    "default": [],
    "production": [CHART / "ci" / "production-values.yaml"],
    "minimal": [CHART / "ci" / "minimal-values.yaml"],
}
CUSTOM_RESOURCES = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
"""Kinds of CRDs (the Prometheus Operator's, KEDA's): not in the Kubernetes schemas; their
fields are asserted below instead."""

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="`make helm` builds helm")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@cache
def rendered(value_set: str) -> tuple[dict[str, Any], ...]:
    files = [a for f in VALUE_SETS[value_set] for a in ("-f", str(f))]
    out = helm("template", "fraud", str(CHART), "--namespace", "payments", *files).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def of_kind(value_set: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in rendered(value_set) if d["kind"] == kind]


def deployment(value_set: str, component: str) -> dict[str, Any]:
    (found,) = [
        d
        for d in of_kind(value_set, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_the_chart_lints_strictly(value_set: str) -> None:
    files = [a for f in VALUE_SETS[value_set] for a in ("-f", str(f))]
    helm("lint", "--strict", str(CHART), *files)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(value_set: str) -> None:
    kinds = set()
    for document in rendered(value_set):
        kinds.add(document["kind"])
        if document["kind"] in CUSTOM_RESOURCES:
            assert set(document) == {"apiVersion", "kind", "metadata", "spec"}
            continue
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    assert {"Deployment", "Service", "ConfigMap"} <= kinds


def test_the_production_set_renders_keda_monitors_rules_and_policies() -> None:
    kinds = [d["kind"] for d in rendered("production")]
    for kind in ("ScaledObject", "ServiceMonitor", "PrometheusRule", "NetworkPolicy",
                 "HorizontalPodAutoscaler", "PodDisruptionBudget"):  # fmt: skip
        assert kind in kinds
    assert "Secret" not in kinds  # an existing Secret holds the credentials
    (scaled,) = of_kind("production", "ScaledObject")
    stream = deployment("production", "stream")
    assert scaled["spec"]["scaleTargetRef"]["name"] == stream["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert trigger["consumerGroup"] == "payments-fraud-stream"
    assert trigger["topic"] == "payments.transactions"
    assert scaled["spec"]["maxReplicaCount"] <= 24  # the partition count
    assert "replicas" not in stream["spec"]  # KEDA owns it
    (rule,) = of_kind("production", "PrometheusRule")
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert "FraudscaleDegradedScores" in alerts
    hpa = of_kind("production", "HorizontalPodAutoscaler")[0]
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]


def test_the_minimal_set_is_one_rest_scorer_on_the_model_volume() -> None:
    kinds = sorted(d["kind"] for d in rendered("minimal"))
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "Secret", "Service"]
    rest = deployment("minimal", "rest")
    assert rest["spec"]["replicas"] == 1
    volumes = {v["name"]: v for v in rest["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "fraudscale-models"
    mount = rest["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    assert mount["readOnly"] is True  # reads what the asset graph publishes


def app_paths() -> set[str]:
    app = create_app(ServingSettings())
    return {path for route in app.routes for path in [route.path]}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_probes_hit_routes_that_exist_on_ports_that_exist(value_set: str) -> None:
    paths = app_paths()
    for document in of_kind(value_set, "Deployment"):
        (container,) = document["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container[probe]
            action = spec.get("httpGet") or spec["tcpSocket"]
            assert action["port"] in ports
            if "httpGet" in spec and container["name"] == "rest":
                assert spec["httpGet"]["path"] in paths
            elif "httpGet" in spec:
                assert spec["httpGet"]["path"] == "/metrics"  # the worker's page
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        config = config_of(value_set, container)
        if container["name"] == "rest":
            assert ports["http"] == int(config["FRAUD_SERVING_PORT"])
            assert "/v2/health/live" in paths
        else:
            assert ports["web"] == int(config["FRAUD_STREAM_WEB_PORT"])
            grace = document["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert grace > float(env["FRAUD_STREAM_SHUTDOWN_SECONDS"])


def config_of(value_set: str, container: dict[str, Any]) -> dict[str, str]:
    names = [e["configMapRef"]["name"] for e in container.get("envFrom", [])]
    maps = {d["metadata"]["name"]: d["data"] for d in of_kind(value_set, "ConfigMap")}
    return {k: v for name in names for k, v in maps[name].items()}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_services_budgets_autoscalers_and_monitors_select_their_own_pods(value_set: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(value_set, "Deployment")}
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for document in rendered(value_set):
        kind, name = document["kind"], document["metadata"]["name"]
        if kind == "Service":
            assert selects(document["spec"]["selector"], pods[name])
            (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
            named = {p["name"] for p in container["ports"]}
            assert {p["targetPort"] for p in document["spec"]["ports"]} <= named
        elif kind == "PodDisruptionBudget":
            assert selects(document["spec"]["selector"]["matchLabels"], pods[name])
            others = [n for n in pods if n != name]
            assert not any(selects(document["spec"]["selector"]["matchLabels"], pods[o])
                           for o in others)  # fmt: skip
        elif kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            assert document["spec"]["scaleTargetRef"]["name"] in deployments
        elif kind == "ServiceMonitor":
            services = {s["metadata"]["name"]: s for s in of_kind(value_set, "Service")}
            assert selects(document["spec"]["selector"]["matchLabels"],
                           services[name]["metadata"]["labels"])  # fmt: skip
            ports = {p["name"] for p in services[name]["spec"]["ports"]}
            assert {e["port"] for e in document["spec"]["endpoints"]} <= ports


def test_image_tags_follow_the_charts_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    images = {
        c["image"]
        for d in of_kind("default", "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"fraudscale-serving:{chart['appVersion']}",
                      f"fraudscale-streaming:{chart['appVersion']}"}  # fmt: skip
    production = {
        c["image"]
        for d in of_kind("production", "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert all(i.startswith("registry.example.com/payments/fraudscale-") for i in production)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_runs_non_root_on_a_read_only_root_without_capabilities(
    value_set: str,
) -> None:
    for document in of_kind(value_set, "Deployment"):
        spec = document["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def env_names(value_set: str, component: str) -> set[str]:
    (container,) = deployment(value_set, component)["spec"]["template"]["spec"]["containers"]
    return {e["name"] for e in container["env"]} | set(config_of(value_set, container))


@pytest.mark.parametrize("component", ["rest", "stream"])
def test_the_charts_env_names_are_exactly_the_settings_fields(component: str) -> None:
    """One source of truth: a renamed, added or removed setting fails here."""
    cls, prefix = CLASSES[component]
    fields = {f for f in cls.__struct_fields__ if f not in NOT_DEPLOYED[component]}
    assert env_names("default", component) == {prefix + f.upper() for f in fields}
    values = yaml.safe_load((CHART / "values.yaml").read_text())[component]["settings"]
    defaults = msgspec.structs.asdict(cls())  # the chart's defaults are the code's
    assert {k: defaults[k] for k in values} == values


def test_the_values_schema_is_generated_from_the_settings_classes() -> None:
    assert SCHEMA.read_text() == render()  # python -m fraud_devtools.chart_schema rewrites it


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ("rest.settings.reasons=three", "reasons"),
        ("rest.settings.redis_timout_ms=10", "redis_timout_ms"),
        ("stream.webPort=0", "webPort"),
        ("shared.modelStore.path=models", "path"),
    ],
)
def test_a_wrong_value_fails_at_install(override: str, complaint: str) -> None:
    done = helm("template", "fraud", str(CHART), "--set", override, check=False)
    assert done.returncode != 0
    assert complaint in done.stderr


def test_more_workers_than_partitions_fail_at_install() -> None:
    done = helm(
        "template", "fraud", str(CHART), "--set", "stream.keda.enabled=true",
        "--set", "stream.keda.maxReplicaCount=13", check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "above shared.kafka.partitions" in done.stderr


def test_the_dashboard_config_map_holds_the_dashboard_file() -> None:
    (dashboard,) = [
        d for d in of_kind("default", "ConfigMap") if d["metadata"]["name"].endswith("dashboard")
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (CHART / "files" / "grafana" / "fraudscale.json").read_text()
    assert dashboard["data"]["fraudscale.json"].strip() == shipped.strip()


def test_the_dagster_values_point_the_official_chart_at_our_code_location() -> None:
    values = yaml.safe_load((ROOT / "helm" / "dagster-user-code.values.yaml").read_text())
    (code,) = values["dagster-user-deployments"]["deployments"]
    assert code["dagsterApiGrpcArgs"] == ["-m", "fraud_assets.definitions"]
    assert code["image"]["repository"].endswith("fraudscale-assets")
    names = {e["name"] for e in code["env"]}
    from fraud_assets.settings import AssetSettings

    fields = {f"FRAUD_ASSETS_{f.upper()}" for f in AssetSettings.__struct_fields__}
    assert names - {"MLFLOW_TRACKING_URI"} <= fields
    assert {"FRAUD_ASSETS_SPARK_REMOTE", "MLFLOW_TRACKING_URI"} <= names
