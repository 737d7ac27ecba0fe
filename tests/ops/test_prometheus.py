"""The rules and the dashboard against a real Prometheus scraping a real REST service, a real
stream worker and a real Pushgateway, with traffic and a Redis outage.

The rules run time-compressed (fraud_devtools.prometheus.compressed: 5m becomes 5s) with
1-second scrapes, so a page that needs five minutes in production needs five seconds here.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from fraud_assets.lib.monitoring import JOB as ASSETS_JOB
from fraud_assets.lib.monitoring import psi_figures, push, skew_figures
from fraud_devtools.processes import wait_until
from fraud_devtools.prometheus import (
    DASHBOARD,
    RULES,
    TOOLS,
    LocalPrometheus,
    LocalPushgateway,
    compressed,
)
from fraud_devtools.redis_server import LocalRedis
from fraud_devtools.rest_server import running_server
from fraud_devtools.stream_workers import LocalWorker, produce, transaction_records
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import Background, rollout_store
from tests.serving.test_online_state import wire

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (TOOLS / "prometheus").exists(), reason="`make prometheus` builds Prometheus"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
METRICS_DOC = ROOT / "docs" / "metrics.md"
RATE_INTERVAL = "5s"
"""What Grafana's $__rate_interval becomes here (four 1-second scrapes and some)."""


class Traffic(Background):
    """REST requests and stream transactions from the history, until stopped: new
    transactions, every tenth request a repeat (a cache hit), every 50th invalid (a 4xx);
    every 100th stream record undecodable (a dead letter)."""

    def __init__(self, rest: str, bootstrap: str, topic: str, history: pa.Table) -> None:
        self.rest, self.bootstrap, self.topic = rest, bootstrap, topic
        half = history.num_rows // 2
        self.rest_rows = history.slice(0, half).drop_columns(["is_fraud"]).to_pylist()
        self.stream_records = transaction_records(history.slice(half))
        self.stopping = threading.Event()
        self.statuses: dict[int, int] = {}
        self.threads = [
            threading.Thread(target=self._rest, daemon=True),
            threading.Thread(target=self._stream, daemon=True),
        ]

    def _rest(self) -> None:
        host, port = self.rest.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            self._requests(connection)
        finally:
            connection.close()

    def _requests(self, connection: http.client.HTTPConnection) -> None:
        body = b""
        for n in itertools.count():
            if self.stopping.is_set():
                return
            if n % 50 == 49:
                body = b'{"transaction_id": "broken"}'
            elif n % 10 != 9 or not body:
                row = self.rest_rows[n % len(self.rest_rows)]
                row = {**row, "transaction_id": f"{row['transaction_id']}-{n}"}
                body = wire(row)
            try:
                connection.request("POST", "/v1/score", body, {"content-type": "application/json"})
                response = connection.getresponse()
                response.read()
                self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
            except OSError:
                connection.close()
            time.sleep(0.01)

    def _stream(self) -> None:
        records = iter(self.stream_records)
        while not self.stopping.is_set():
            batch = [*itertools.islice(records, 50), (b"bad", b"{not json")]
            if len(batch) == 1:
                return
            asyncio.run(produce(self.bootstrap, self.topic, batch))
            time.sleep(0.5)


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, kafka: str, trained, second_model, history
) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("ops")
    store = rollout_store(root / "models", trained, second_model)
    redis = LocalRedis(root / "redis")
    (root / "redis").mkdir()
    redis.start()
    gateway = LocalPushgateway(root / "pushgateway")
    gateway.start()
    prefix = f"ops{root.name[-6:]}"
    settings = ServingSettings(
        model_store_dir=str(store.root), redis_url=redis.url, redis_timeout_ms=100,
        decision_log_bootstrap=kafka, decision_log_topic=f"{prefix}.decisions",
    )  # fmt: skip
    worker = LocalWorker(
        root / "stream",
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "FRAUD_STREAM_TOPIC_PREFIX": prefix,
            "FRAUD_STREAM_APP_ID": f"{prefix}-app",
            "FRAUD_STREAM_MODEL_STORE_DIR": str(store.root),
            "FRAUD_STREAM_REDIS_URL": redis.url,
        },
    )
    worker.start()
    with running_server(create_app(settings)) as rest:
        prometheus = LocalPrometheus(
            root / "prometheus",
            {
                "fraudscale-rest": [rest],
                "fraudscale-stream": [f"127.0.0.1:{worker.web_port}"],
                ASSETS_JOB: [gateway.address],
            },
            compressed(RULES.read_text(), 60),
        )
        prometheus.start()
        # The nightly figures, pushed as the scoring and feature_skew assets push them.
        assert push(gateway.address, "scored_transactions", psi_figures("1", 0.07))
        assert push(
            gateway.address,
            "feature_skew",
            skew_figures({"rest": 900, "stream": 4000}, {"rest": 0}, {("rest", "degraded"): 0}),
        )
        parts = {"prometheus": prometheus, "redis": redis, "worker": worker, "rest": rest}
        with Traffic(rest, kafka, f"{prefix}.transactions", history) as traffic:
            yield {**parts, "traffic": traffic, "parts": parts}
        prometheus.stop()
    worker.kill()
    gateway.stop()
    parts["redis"].stop()  # the test that stops Redis starts another on its port


def targets_up(prometheus: LocalPrometheus) -> bool:
    up = prometheus.query("up")
    return len(up) == 3 and all(s["value"][1] == "1" for s in up)


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {"$__rate_interval": RATE_INTERVAL, "$rest_job": ".+", "$stream_job": ".+"}
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            out.append((f"{panel['title']} [{target['refId']}]", expr))
    return out


def empty_panels(prometheus: LocalPrometheus) -> list[str]:
    return [title for title, expr in panel_queries() if not prometheus.query(expr)]


def test_every_dashboard_panel_returns_series(platform: dict[str, Any]) -> None:
    prometheus = platform["prometheus"]
    wait_until(lambda: targets_up(prometheus), "all three targets up", 60)
    try:
        wait_until(lambda: not empty_panels(prometheus), "every panel to show data", 90)
    except TimeoutError:
        pytest.fail(f"panels without data: {empty_panels(prometheus)}")
    assert len(panel_queries()) >= 25


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (words before `{`, `[` or space that are not
    PromQL functions, keywords or label names)."""
    stripped = re.sub(r'"[^"]*"', '""', expr)  # label values
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)  # label matchers
    stripped = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped
    )
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped))
    keywords = {"and", "or", "unless", "bool", "offset", "inf", "nan", "le"}
    functions = set(re.findall(r"([a-zA-Z_]+)\s*\(", stripped))
    return {w for w in words - keywords - functions if "_" in w or ":" in w}


def family(name: str, known: dict[str, dict[str, str]]) -> str:
    """The metadata family of a series name (histograms export _bucket, _sum and _count)."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in known:
            return name.removesuffix(suffix)
    return name


def test_rules_and_dashboard_use_only_metrics_the_services_export(
    platform: dict[str, Any],
) -> None:
    prometheus = platform["prometheus"]
    wait_until(lambda: targets_up(prometheus), "all three targets up", 60)
    wait_until(lambda: "fraudscale_stream_dead_letters_total" in prometheus.metadata(),
               "a dead letter scraped", 60)  # fmt: skip
    exported = prometheus.metadata()
    rules = yaml.safe_load(RULES.read_text())["groups"]
    recorded = {r["record"] for g in rules for r in g["rules"] if "record" in r}
    builtin = {"up", "push_time_seconds", "ALERTS"}
    used = {name for _, expr in panel_queries() for name in metric_names(expr)}
    used |= {name for g in rules for r in g["rules"] for name in metric_names(r["expr"])}
    unknown = {n for n in used if family(n, exported) not in exported} - recorded - builtin
    assert not unknown
    for name, meta in exported.items():
        if name.startswith("fraudscale_"):
            assert meta["help"].strip(), name


def test_the_metrics_follow_prometheus_naming_and_are_documented(
    platform: dict[str, Any],
) -> None:
    prometheus = platform["prometheus"]
    wait_until(lambda: "fraudscale_stream_dead_letters_total" in prometheus.metadata(),
               "a dead letter scraped", 60)  # fmt: skip
    for job in ("fraudscale-rest", "fraudscale-stream"):
        (target,) = [
            t["scrapeUrl"]
            for t in prometheus.api("targets")["activeTargets"]
            if t["labels"]["job"] == job
        ]
        with urllib.request.urlopen(target, timeout=10) as response:
            scraped = response.read()
        lint = subprocess.run(
            [str(TOOLS / "promtool"), "check", "metrics"],
            input=scraped, capture_output=True, check=False,
        )  # fmt: skip
        assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    exported = {
        name: meta for name, meta in prometheus.metadata().items() if name.startswith("fraudscale_")
    }
    want = metrics_doc(exported)
    if METRICS_DOC.read_text() != want:
        METRICS_DOC.with_suffix(".md.new").write_text(want)
        pytest.fail(f"{METRICS_DOC} is out of date: compare it with docs/metrics.md.new")


def metrics_doc(exported: dict[str, dict[str, str]]) -> str:
    lines = [
        "# Metrics",
        "",
        "Every metric the REST service (`/metrics`), the stream workers (`/metrics` on their",
        "web port) and the nightly assets (pushed to a Pushgateway, job `fraudscale-assets`)",
        "export, as a real Prometheus reads them. `tests/ops/test_prometheus.py` checks this",
        "list against the running services, and that the rules and the dashboard use no other.",
        "",
        "| metric | type | help |",
        "|---|---|---|",
    ]
    for name in sorted(exported):
        meta = exported[name]
        lines.append(f"| `{name}` | {meta['type']} | {meta['help'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def test_stopping_redis_pages_and_the_alert_resolves_after_recovery(
    platform: dict[str, Any],
) -> None:
    prometheus, redis = platform["prometheus"], platform["redis"]
    wait_until(lambda: targets_up(prometheus), "all three targets up", 60)
    time.sleep(6)  # a clean window first: nothing degraded yet
    assert "FraudscaleDegradedScores" not in prometheus.alert_states()
    redis.stop()
    try:
        wait_until(
            lambda: "pending" in prometheus.alert_states().get("FraudscaleDegradedScores", set())
            or "firing" in prometheus.alert_states().get("FraudscaleDegradedScores", set()),
            "FraudscaleDegradedScores pending", 60,
        )  # fmt: skip
        wait_until(
            lambda: "firing" in prometheus.alert_states().get("FraudscaleDegradedScores", set()),
            "FraudscaleDegradedScores firing", 60,
        )  # fmt: skip
        wait_until(
            lambda: "firing" in prometheus.alert_states().get("FraudscaleRedisErrors", set()),
            "FraudscaleRedisErrors firing", 60,
        )  # fmt: skip
    finally:
        restarted = LocalRedis(redis.folder, port=redis.port)
        restarted.start()
        platform["parts"]["redis"] = restarted
    wait_until(
        lambda: "FraudscaleDegradedScores" not in prometheus.alert_states(),
        "FraudscaleDegradedScores resolved", 90,
    )  # fmt: skip
    assert platform["traffic"].statuses.get(500, 0) == 0


def test_a_worker_that_stops_answering_pages(platform: dict[str, Any]) -> None:
    prometheus, worker = platform["prometheus"], platform["worker"]
    wait_until(lambda: targets_up(prometheus), "all three targets up", 60)
    worker.kill()
    wait_until(
        lambda: "firing" in prometheus.alert_states().get("FraudscaleTargetDown", set()),
        "FraudscaleTargetDown firing", 60,
    )  # fmt: skip
