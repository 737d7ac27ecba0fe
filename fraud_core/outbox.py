"""The records one batch produces, handed to Kafka as one record batch per topic partition
(the stream workers' outputs, the REST service's decision log; needs aiokafka, which the
`serving` and `streaming` extras install).

`AIOKafkaProducer.send` runs a coroutine, metadata checks and an append to the accumulator for
every record; building record batches ourselves and submitting each with `send_batch` does
that work once per batch. Partitions come from the producer's own
partitioner (murmur2 of the key, as the Java client does), so keys land where `send` would
put them and consumers see the same per-key order.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

Headers = list[tuple[str, bytes]]


def key_partition(key: bytes | None, partitions: int) -> int:
    """The partition a record goes to, as aiokafka's and Java's default partitioner choose it
    (a record without a key goes to any partition)."""
    if key is None:
        return random.randrange(partitions)
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Outbox:
    """Collects records per topic (in order) and sends them all in `flush`."""

    def __init__(self) -> None:
        self._topics: dict[str, list[tuple[bytes | None, bytes, int | None, Headers]]] = (
            defaultdict(list)
        )

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Queue one record; `partition` None means the key's partition."""
        self._topics[topic].append((key, value, partition, list(headers)))

    async def flush(self, producer: AIOKafkaProducer) -> list[asyncio.Future[Any]]:
        """Submit every queued record to `producer`; returns one future per record batch,
        done when the broker has acknowledged it.

        The records are in the producer's accumulator when this returns, so a later
        `producer.flush()` (Faust's, before it commits offsets) waits for them too."""
        return [future for future, _ in await self.flush_counted(producer)]

    async def flush_counted(
        self, producer: AIOKafkaProducer
    ) -> list[tuple[asyncio.Future[Any], int]]:
        """`flush`, each record batch's future with the number of records it holds."""
        topics, self._topics = self._topics, defaultdict(list)
        sent: list[tuple[asyncio.Future[Any], int]] = []
        # A transaction's score, alert and decisions share its key: murmur2 (pure Python,
        # microseconds a key) once per key and partition count.
        known: dict[tuple[bytes, int], int] = {}
        for topic, records in topics.items():
            count = len(await producer.partitions_for(topic))
            by_partition: dict[int, list[tuple[bytes | None, bytes, Headers]]] = defaultdict(list)
            for key, value, partition, headers in records:
                if partition is None:
                    if key is None:
                        partition = key_partition(key, count)
                    else:
                        partition = known.get((key, count))
                        if partition is None:
                            partition = known[key, count] = key_partition(key, count)
                by_partition[partition].append((key, value, headers))
            for partition, items in by_partition.items():
                batch = producer.create_batch()
                for key, value, headers in items:
                    # append answers None when the batch is full: send it, start the next.
                    while (
                        batch.append(timestamp=None, key=key, value=value, headers=headers) is None
                    ):
                        if batch.record_count() == 0:
                            raise ValueError(f"a record for {topic} is larger than a batch")
                        future = await producer.send_batch(batch, topic, partition=partition)
                        sent.append((future, batch.record_count()))
                        batch = producer.create_batch()
                if batch.record_count():
                    future = await producer.send_batch(batch, topic, partition=partition)
                    sent.append((future, batch.record_count()))
        return sent
