"""The topics: inputs keyed so that each card's (and merchant's) records stay in one partition."""

from __future__ import annotations

from typing import Any

from streaming.app import app, settings

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
    "internal": True,  # created with the app's partition count when missing
    "partitions": settings.partitions,
}

transactions_topic = app.topic(settings.topic("transactions"), **RAW)
"""Transactions as JSON (fraud_core.schema.Transaction), keyed by card_id."""

labels_topic = app.topic(settings.topic("labels"), **RAW)
"""Fraud labels as JSON (fraud_core.schema.LabelEvent), keyed by merchant_id."""

scores_topic = app.topic(settings.topic("scores"), **RAW)
"""Every transaction's score (fraud_core.scoring.Score as JSON), keyed by transaction_id:
a consumer that sees a transaction_id twice (after a worker crash) keeps one."""

alerts_topic = app.topic(settings.topic("alerts"), **RAW)
"""Scores at or above the model's threshold, with the transaction and the top reasons."""

dead_letters_topic = app.topic(settings.topic("dead-letters"), **RAW)
"""Records that failed to decode or validate: the original key and bytes, with headers
error.field, error.reason, error.kind, source.topic, source.partition, source.offset."""
