"""Prometheus metrics of the REST scorer, on a registry of its own (one per app)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from fraud_core.model_store import ModelHolder
    from serving.cache import ScoreCache
    from serving.services.scoring import ScoringPipeline

# No `_created` gauge beside every counter and histogram: Prometheus does not use them, and
# they doubled the series (and the metric list) of both services.
disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self.requests = Counter(
            "fraudscale_requests", "Requests by route and status.", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "fraudscale_request_seconds", "Request latency by route.", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "fraudscale_inference_batch_size", "Rows per onnxruntime call.",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.model_info = Gauge(
            "fraudscale_model_info", "The served models by role (value 1).",
            ["name", "version", "role"], registry=self.registry,
        )  # fmt: skip
        self.canary_share = Gauge(
            "fraudscale_canary_share", "Share of cards the canary answers (0: no canary).",
            registry=self.registry,
        )  # fmt: skip
        self.decision_lag = Histogram(
            "fraudscale_decision_log_delivery_lag_seconds",
            "From a decision queued to Kafka acknowledging it (a sample of each send).",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.load_failures = Gauge(
            "fraudscale_model_load_failures", "Published models refused since start.",
            registry=self.registry,
        )  # fmt: skip
        self.ready = Gauge(
            "fraudscale_ready", "1 while a valid model is loaded (readiness answers 200).",
            registry=self.registry,
        )  # fmt: skip

    def for_route(self, route: str, status: int) -> tuple[Counter, Histogram]:
        """The request counter and latency histogram of a route and status (looked up once:
        prometheus_client's `labels()` costs a lock and label checks on every call)."""
        children = self._children.get((route, status))
        if children is None:
            children = self._children[(route, status)] = (
                self.requests.labels(route, str(status)),
                self.latency.labels(route),
            )
        return children

    def watch(
        self, cache: ScoreCache | None, online_state: object, scoring: ScoringPipeline
    ) -> None:
        """Report the cache's, the online store's, the scoring's and the decision log's own
        counts at each scrape."""
        self.registry.register(_CountsCollector(cache, online_state))
        self.registry.register(_RolloutCollector(scoring))

    def export(self, models: ModelHolder) -> bytes:
        self.model_info.clear()
        served = models.served
        for role, scorer in served.roles.items() if served else ():
            meta = scorer.metadata
            self.model_info.labels(meta.name, meta.version, role).set(1)
        self.canary_share.set(served.canary_share if served and served.canary else 0.0)
        self.load_failures.set(models.load_failures)
        self.ready.set(float(models.ready))
        return generate_latest(self.registry)


class _CountsCollector(Collector):
    def __init__(self, cache: ScoreCache | None, online_state: object) -> None:
        self.cache, self.online_state = cache, online_state

    def collect(self) -> Iterator[CounterMetricFamily]:
        hits = CounterMetricFamily("fraudscale_cache_hits", "Score cache hits.", labels=["level"])
        misses = CounterMetricFamily("fraudscale_cache_misses", "Scores not in any cache.")
        redis_errors = CounterMetricFamily(
            "fraudscale_redis_errors", "Redis reads or writes that failed or timed out.",
            labels=["use"],
        )  # fmt: skip
        if self.cache is not None:
            for level, count in self.cache.hits.items():
                hits.add_metric([level], count)
            misses.add_metric([], self.cache.misses)
            redis_errors.add_metric(["score_cache"], self.cache.bypasses)
        redis_errors.add_metric(["online_state"], getattr(self.online_state, "errors", 0))
        yield from (hits, misses, redis_errors)


class _RolloutCollector(Collector):
    def __init__(self, scoring: ScoringPipeline) -> None:
        self.scoring = scoring

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["model_version", "role"]
        scores = CounterMetricFamily(
            "fraudscale_scores", "Transactions scored (not from the cache), by model and role.",
            labels=labels,
        )  # fmt: skip
        alerts = CounterMetricFamily(
            "fraudscale_alerts", "Scores at or above the model's threshold, by model and role.",
            labels=labels,
        )  # fmt: skip
        for (version, role), (n, alerted) in list(self.scoring.decided.items()):
            scores.add_metric([version, role], n)
            alerts.add_metric([version, role], alerted)
        degraded = CounterMetricFamily(
            "fraudscale_degraded_scores",
            "Transactions scored without their card's and merchant's state (Redis down or "
            "slow: the contract's defaults).",
        )
        degraded.add_metric([], self.scoring.degraded_scores)
        yield from (scores, alerts, degraded)
        log = self.scoring.decision_log
        if log is None:
            return
        depth = GaugeMetricFamily(
            "fraudscale_decision_log_queue_depth",
            "Decisions waiting to be sent to Kafka or waiting for its acknowledgement.",
        )
        depth.add_metric([], log.queued + log.in_flight)
        dropped = CounterMetricFamily(
            "fraudscale_decision_log_dropped",
            "Decisions not logged: queue_full (Kafka slow or gone), delivery_failed, or "
            "record_failed (a bug: its traceback is in the service log).",
            labels=["reason"],
        )
        for reason, count in log.dropped.items():
            dropped.add_metric([reason], count)
        delivered = CounterMetricFamily(
            "fraudscale_decision_log_delivered", "Decisions Kafka acknowledged."
        )
        delivered.add_metric([], log.delivered)
        offered = CounterMetricFamily(
            "fraudscale_decision_log_offered",
            "Decisions made: each is delivered, dropped or waiting (queue depth).",
        )
        offered.add_metric([], log.offered)
        connected = GaugeMetricFamily(
            "fraudscale_decision_log_connected", "1 while the decision log's producer is up."
        )
        connected.add_metric([], float(log.connected))
        yield from (depth, dropped, delivered, offered, connected)


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    """Count and time every HTTP request by route name (not raw path: bounded labels)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, capture)
        finally:
            handler = scope.get("route_handler")
            route = getattr(handler, "name", None) or "unmatched"
            metrics: ServingMetrics = scope["litestar_app"].state.services.metrics
            requests, latency = metrics.for_route(route, status)
            requests.inc()
            latency.observe(time.perf_counter() - start)

    return middleware


@get("/metrics", operation_id="metrics", name="metrics", include_in_schema=False)
async def metrics_endpoint(request: Request, state: State) -> Response[bytes]:
    """Prometheus exposition of this process's metrics."""
    services = state.services
    return Response(services.metrics.export(services.models), media_type=CONTENT_TYPE_LATEST)
