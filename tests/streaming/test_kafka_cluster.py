"""The stream on a three-broker Kafka cluster (KRaft, three voters) with replication 3: a
broker killed with SIGKILL mid-stream loses nothing and stops no worker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from fraud_core.inference import Scorer
from fraud_core.model_store import ModelStore
from fraud_core.state import end_states
from fraud_devtools.kafka import LocalKafkaCluster
from fraud_devtools.processes import wait_until
from fraud_devtools.stream_workers import label_records, transaction_records
from tests.streaming.conftest import Stream
from tests.streaming.test_stream import (
    final_card_states,
    final_merchant_states,
    read,
    reference_scores,
    scores_by_id,
    send,
    wait_for_labels,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalKafkaCluster]:
    kafka = LocalKafkaCluster(tmp_path / "kafka", nodes=3)
    kafka.start()
    yield kafka
    kafka.stop()


Replication = dict[str, tuple[set[int], set[int], str]]


async def replication(bootstrap: str, topics: list[str]) -> Replication:
    """Per topic: its partitions' replica counts, in-sync replica counts, min.insync.replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
        )
    finally:
        await admin.close()
    min_isr = {}
    for response in configs:
        for resource in response.resources:
            name, entries = resource[3], resource[4]
            min_isr[name] = next(e[1] for e in entries if e[0] == "min.insync.replicas")
    return {
        t["topic"]: (
            {len(p["replicas"]) for p in t["partitions"]},
            {len(p["isr"]) for p in t["partitions"]},
            min_isr[t["topic"]],
        )
        for t in described
    }


def test_a_broker_killed_mid_stream_loses_nothing_and_stops_no_worker(
    tmp_path: Path, cluster: LocalKafkaCluster, models: ModelStore, history: pa.Table, trained
) -> None:  # type: ignore[no-untyped-def]
    stream = Stream(tmp_path, cluster.bootstrap, models)
    try:
        worker = stream.worker(FRAUD_STREAM_REPLICATION_FACTOR="3")
        wait_for_labels(worker, send(stream, "labels", label_records(history)))
        n = send(stream, "transactions", transaction_records(history))
        wait_until(
            lambda: worker.metric("fraudscale_stream_transactions_total") >= n // 3, "work", 120
        )
        cluster.kill(0)  # a third of the way through, one of three brokers dies outright
        scores = scores_by_id(read(stream, stream.topic("scores"), until=n, distinct=True))
        assert worker.exit_code() is None  # the worker never stopped
        expected = reference_scores(history, Scorer(trained.bundle))
        assert scores.keys() == expected.keys()  # every transaction scored
        assert max(abs(s.score - expected[t]) for t, many in scores.items() for s in many) <= 1e-6
        threshold = np.float32(trained.bundle.metadata.threshold)
        alerting = {tid for tid, s in expected.items() if np.float32(s) >= threshold}
        alerts = read(stream, stream.topic("alerts"), until=len(alerting), distinct=True)
        assert {a.key.decode() for a in alerts} == alerting
        cards, merchants = end_states(history)
        assert final_card_states(stream) == cards
        assert final_merchant_states(stream) == merchants
        # The broker comes back and catches up: every partition in sync on three again.
        cluster.restart(0)
        app = stream.env["FRAUD_STREAM_APP_ID"]
        topics = [
            stream.topic("transactions"), stream.topic("scores"), stream.topic("decisions"),
            f"{app}-card_to_state-changelog", f"{app}-merchant_to_risk-changelog",
        ]  # fmt: skip
        wait_until(
            lambda: all(
                isr == {3}
                for _, isr, _ in asyncio.run(replication(cluster.bootstrap, topics)).values()
            ),
            "every replica back in sync", 120,
        )  # fmt: skip
        described = asyncio.run(replication(cluster.bootstrap, topics))
        settled = {topic: (replicas, isr) for topic, (replicas, _, isr) in described.items()}
        assert settled == {topic: ({3}, "2") for topic in topics}  # RF 3, 2 in sync to write
        assert worker.exit_code() is None
    finally:
        stream.close()
