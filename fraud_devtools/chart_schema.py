"""helm/fraudscale/values.schema.json, generated from the settings classes.

`rest.settings` and `stream.settings` accept exactly the fields of ServingSettings and
StreamSettings that the chart does not derive itself (addresses, ports, paths, secrets:
`CHART_SET`), typed as the classes type them, so a misspelt or mistyped setting fails at
`helm install`. `python -m fraud_devtools.chart_schema` rewrites the file; a test holds it
equal to this output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from serving.settings import PREFIX as SERVING_PREFIX
from serving.settings import ServingSettings
from streaming.settings import StreamSettings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "helm" / "fraudscale" / "values.schema.json"
STREAM_PREFIX = "FRAUD_STREAM_"

CHART_SET = {
    "rest": {
        "host", "port", "model_store_dir", "mlflow_tracking_uri", "mlflow_model_name",
        "decision_log_bootstrap", "decision_log_topic", "redis_url", "api_keys",
    },
    "stream": {
        "broker", "topic_prefix", "partitions", "replication_factor", "model_store_dir",
        "redis_url", "web_port", "data_dir",
    },
}  # fmt: skip
"""Settings the chart sets from `shared` and the component's own values (one scheme for both
components), not from `<component>.settings`."""
NOT_DEPLOYED = {"stream": {"kill_at"}, "rest": set()}
"""Settings for tests only (kill_at crashes a worker on purpose)."""
CLASSES: dict[str, tuple[type[msgspec.Struct], str]] = {
    "rest": (ServingSettings, SERVING_PREFIX),
    "stream": (StreamSettings, STREAM_PREFIX),
}


def settings_schema(component: str) -> dict[str, Any]:
    cls, prefix = CLASSES[component]
    _, components = msgspec.json.schema_components([cls])
    fields = components[cls.__name__]["properties"]
    skip = CHART_SET[component] | NOT_DEPLOYED[component]
    properties = {}
    for name, spec in fields.items():
        if name in skip:
            continue
        properties[name] = {"type": spec["type"], "description": f"{prefix}{name.upper()}"}
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "additionalProperties": False,
                           "properties": properties}  # fmt: skip
    if required:
        out["required"] = required
    return out


STRING = {"type": "string"}
BOOL = {"type": "boolean"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
COUNT = {"type": "integer", "minimum": 0}
POSITIVE = {"type": "integer", "minimum": 1}
MAP = {"type": "object"}
LIST = {"type": "array"}
RESOURCES = {"type": "object", "properties": {"requests": MAP, "limits": MAP}}
MONITOR = _object({"enabled": BOOL, "interval": STRING, "labels": MAP})


def schema() -> dict[str, Any]:
    pod = {"nodeSelector": MAP, "tolerations": LIST, "affinity": MAP, "podAnnotations": MAP}
    rest = _object(
        {
            "enabled": BOOL, "replicas": POSITIVE, "port": PORT,
            "service": _object({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                                "port": PORT}),
            "resources": RESOURCES, "startupSeconds": POSITIVE,
            "terminationGracePeriodSeconds": COUNT,
            "autoscaling": _object({
                "enabled": BOOL, "minReplicas": POSITIVE, "maxReplicas": POSITIVE,
                "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1,
                                                   "maximum": 100},
                "requestsPerSecond": _object({"enabled": BOOL, "metricName": STRING,
                                              "averageValue": STRING}),
            }),
            "podDisruptionBudget": _object({"enabled": BOOL,
                                            "minAvailable": {"type": ["integer", "string"]}}),
            "serviceMonitor": MONITOR, "topologySpread": _object({"enabled": BOOL}),
            **pod, "settings": settings_schema("rest"),
        }
    )  # fmt: skip
    stream = _object(
        {
            "enabled": BOOL, "replicas": COUNT, "webPort": PORT, "resources": RESOURCES,
            "keda": _object({
                "enabled": BOOL, "minReplicaCount": COUNT, "maxReplicaCount": POSITIVE,
                "lagThreshold": STRING, "pollingInterval": POSITIVE, "cooldownPeriod": POSITIVE,
            }),
            "podDisruptionBudget": _object({"enabled": BOOL,
                                            "maxUnavailable": {"type": ["integer", "string"]}}),
            "serviceMonitor": MONITOR, **pod, "settings": settings_schema("stream"),
        }
    )  # fmt: skip
    shared = _object(
        {
            "redis": _object({"url": STRING}),
            "kafka": _object({"bootstrapServers": {"type": "string", "minLength": 1},
                              "topicPrefix": {"type": "string", "minLength": 1},
                              "partitions": POSITIVE, "replicationFactor": POSITIVE}),
            "mlflow": _object({"trackingUri": STRING, "modelName": STRING}),
            "modelStore": _object({"path": {"type": "string", "pattern": "^/"},
                                   "existingClaim": STRING}),
            "apiKeys": STRING, "existingSecret": STRING,
        }
    )  # fmt: skip
    return {
        "$schema": "https://json-schema.org/draft-07/schema#",
        "title": "fraudscale chart values (generated by fraud_devtools/chart_schema.py)",
        **_object(
            {
                "fullnameOverride": STRING,
                "image": _object({"repository": {"type": "string", "minLength": 1},
                                  "tag": STRING,
                                  "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}),
                "imagePullSecrets": LIST,
                "shared": shared,
                "podSecurityContext": MAP, "containerSecurityContext": MAP,
                "rest": rest, "stream": stream,
                "networkPolicy": _object({"enabled": BOOL, "restClients": LIST,
                                          "monitoringNamespace": STRING}),
                "monitoring": _object({
                    "grafanaDashboard": _object({"enabled": BOOL, "namespace": STRING,
                                                 "labels": MAP}),
                    "prometheusRule": _object({"enabled": BOOL, "labels": MAP}),
                }),
            }
        ),
    }  # fmt: skip


def render() -> str:
    return json.dumps(schema(), indent=2) + "\n"


if __name__ == "__main__":
    SCHEMA.write_text(render())
    print(SCHEMA)
