"""The topics: inputs keyed so that each card's (and merchant's) records stay in one partition."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
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


async def provision_topics(
    bootstrap: str,
    topics: Sequence[str],
    partitions: int,
    replication: int,
    config: Mapping[str, str],
    timeout: float = 60,
) -> dict[str, list[TopicPartition]]:
    """Create those of `topics` that are missing and wait until the cluster's metadata shows
    every one; each topic's partitions (an existing topic keeps its own count: the caller
    checks it). A deployment provisions a worker's input topics like this before it starts
    the worker: a topic that a consumer group's first generation does not see is assigned only
    in a later one, and a producer's first send to a topic being created waits for its
    leader."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for topic in topics:
            new = NewTopic(
                topic, num_partitions=partitions, replication_factor=replication,
                topic_configs=dict(config),
            )  # fmt: skip
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([new])
    finally:
        await admin.close()
    return await wait_for_topics(bootstrap, topics, timeout)


async def wait_for_topics(
    bootstrap: str,
    topics: Sequence[str],
    timeout: float | None = 60,
    waiting: Callable[[list[str]], None] | None = None,
) -> dict[str, list[TopicPartition]]:
    """Each of `topics`' partitions, once the cluster's metadata shows every one; `waiting`
    is called with the missing ones when the first look does not find them all. TimeoutError
    after `timeout` seconds (None: no deadline)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        shown: dict[str, list[TopicPartition]] = {}
        while True:
            for topic in topics:
                if topic not in shown and (found := consumer.partitions_for_topic(topic)):
                    shown[topic] = [TopicPartition(topic, p) for p in sorted(found)]
            if not (missing := [t for t in topics if t not in shown]):
                return shown
            if waiting is not None:
                waiting(missing)
                waiting = None  # told once
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"topics {missing} not in the cluster's metadata")
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
