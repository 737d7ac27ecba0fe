"""Prometheus metrics of a stream worker, served on its web port at /metrics."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

# No `_created` gauge beside every counter and histogram: Prometheus does not use them, and
# they doubled the series (and the metric list) of both services.
disable_created_metrics()

registry = CollectorRegistry()

transactions = Counter("fraudscale_stream_transactions", "Transactions scored.", registry=registry)
alerts = Counter(
    "fraudscale_stream_alerts", "Transactions at or above the threshold.", registry=registry
)
labels = Counter(
    "fraudscale_stream_labels", "Labels folded into merchant state.", registry=registry
)
dead_letters = Counter(
    "fraudscale_stream_dead_letters",
    "Records sent to the dead-letter topic, by source topic and error kind.",
    ["topic", "kind"],
    registry=registry,
)
batch_size = Histogram(
    "fraudscale_stream_batch_size",
    "Transactions per onnxruntime call.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
    registry=registry,
)
lag_seconds = Histogram(
    "fraudscale_stream_lag_seconds",
    "From a transaction's Kafka timestamp to its score being handed to the producer.",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
    registry=registry,
)
redis_errors = Counter(
    "fraudscale_stream_redis_errors",
    "Online-state writes to Redis that failed (the tables stay the source of truth).",
    registry=registry,
)
model_load_failures = Counter(
    "fraudscale_stream_model_load_failures",
    "Published bundles refused because they failed validation.",
    registry=registry,
)
model = Info("fraudscale_stream_model", "The model scoring the stream.", registry=registry)
waiting_for_model = Gauge(
    "fraudscale_stream_waiting_for_model",
    "1 while no valid model is published and input is held back.",
    registry=registry,
)
consumer_lag = Gauge(
    "fraudscale_stream_consumer_lag_records",
    "Per owned partition of the transactions topic: records after the committed offset (what "
    "a restarted worker would read again or still has to read), at scrape time.",
    ["partition"],
    registry=registry,
)
assigned_partitions = Gauge(
    "fraudscale_stream_assigned_partitions",
    "Partitions of the transactions topic this worker owns (the group splits them).",
    registry=registry,
)
redelivered = Counter(
    "fraudscale_stream_redelivered",
    "Transactions received again after a crash or a rebalance (applied before), by what they "
    "were scored from: 'first' (the features of their first scoring, kept until committed) or "
    "'state' (no longer kept: the group's offsets were reset).",
    ["scored_from"],
    registry=registry,
)
applied_until = Gauge(
    "fraudscale_stream_applied_until_seconds",
    "Per input partition: the newest transaction time applied to card state "
    "(source=transactions) or the newest label time applied to merchant state "
    "(source=labels), in Unix seconds. Warm starts report theirs the same way.",
    ["source", "partition"],
    registry=registry,
)
decisions = Counter(
    "fraudscale_stream_decisions",
    "Decisions by model version, role (champion, canary, shadow) and decision (alert, allow); "
    "shadow decisions reach the decision log only.",
    ["model_version", "role", "decision"],
    registry=registry,
)
served = Gauge(
    "fraudscale_stream_model_served",
    "The models scoring the stream, by role (value 1).",
    ["name", "version", "role"],
    registry=registry,
)
canary_share = Gauge(
    "fraudscale_stream_canary_share",
    "Share of cards the canary answers (0: no canary).",
    registry=registry,
)
