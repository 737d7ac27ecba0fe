"""The topics: inputs keyed so that each card's (and merchant's) records stay in one partition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faust.types import AppT, TopicT

from streaming.settings import StreamSettings


@dataclass(frozen=True)
class Topics:
    transactions: TopicT
    """Transactions as JSON (fraud_core.schema.Transaction), keyed by card_id."""
    labels: TopicT
    """Fraud labels as JSON (fraud_core.schema.LabelEvent), keyed by merchant_id."""
    scores: TopicT
    """Every transaction's score (fraud_core.scoring.Score as JSON), keyed by transaction_id:
    a consumer that sees a transaction_id twice (after a worker crash) keeps one."""
    alerts: TopicT
    """Scores at or above the model's threshold, with the transaction and the top reasons."""
    dead_letters: TopicT
    """Records that failed to decode or validate: the original key and bytes, with headers
    error.field, error.reason, error.kind, source.topic, source.partition, source.offset."""

    decisions: TopicT
    """The decision log (fraud_core.rollout.DecisionRecord as JSON), keyed by transaction_id:
    every model's decision in every role, shared with the REST service."""

    @property
    def outputs(self) -> tuple[TopicT, ...]:
        return (self.scores, self.alerts, self.dead_letters, self.decisions)


def declare_topics(app: AppT, settings: StreamSettings) -> Topics:
    """The app's topics, raw bytes in and out (records are decoded by streaming.scoring)."""
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "internal": True,  # created with the app's partition count when missing
        "partitions": settings.partitions,
        "config": settings.topic_config(),
    }
    names = ("transactions", "labels", "scores", "alerts", "dead-letters", "decisions")
    return Topics(*(app.topic(settings.topic(name), **raw) for name in names))
