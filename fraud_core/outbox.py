"""The records one batch produces, handed to Kafka as one record batch per topic partition
(the stream workers' outputs, the REST service's decision log; needs aiokafka, which the
`serving` and `streaming` extras install).

`AIOKafkaProducer.send` runs a coroutine, metadata checks and an append to the accumulator for
every record; building record batches ourselves and submitting each with `send_batch` does
that work once per batch. Each record batch is closed before it is submitted: it is complete,
so it goes out without the producer's linger (aiokafka lingers on an open batch, for `send`
to add records to it), and no one else's `send` can add to it. Partitions are the default
partitioner's (murmur2 of the key, as the Java client and aiokafka choose them), so keys land
where `send` would put them and consumers see the same per-key order; `murmur2_many`
computes them for a whole flush with numpy (aiokafka's pure-Python murmur2 costs ~3 µs a
key, a few percent of a transaction).

With fraud_native installed (the `native` extra), a topic's records become their record
batches in one compiled call (`fraud_native.record_batches`: the same partitions, the same
split, the same bytes as aiokafka's `BatchBuilder`, which a test holds it to), for an
uncompressed producer without serializers, as this project's are; records with headers (dead
letters) and a producer that compresses take the path above. Decisions (`add_decisions`) go
further: their messages are made into one compiled buffer (`fraud_native.Messages`) and
their record batches from it, with no Python object a message in between.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from fraud_core.rollout import Messages

Headers = list[tuple[str, bytes]]
_NO_HEADERS: Headers = []
"""Shared by the records queued without headers (never changed)."""
RECORD_BATCH_BYTES = 512 * 1024
"""The producers' record-batch size (aiokafka's default, 16 KiB, meant a produce request per
~25 decision records); below the broker's 1 MiB message limit."""


def _compiled() -> Callable[..., list[tuple[int, Any]]] | None:
    try:
        from fraud_native import record_batches
    except ImportError:  # the `native` extra is not installed: aiokafka's builder serves
        return None
    return record_batches


_record_batches = _compiled()


def _plain_batches(producer: AIOKafkaProducer) -> tuple[int, bool] | None:
    """(batch size, transactional) when `producer`'s batches are what `record_batches`
    makes (uncompressed, no serializers), else None."""
    accumulator = getattr(producer, "_message_accumulator", None)
    if (
        _record_batches is None
        or getattr(accumulator, "_compression_type", None) != 0
        or getattr(producer, "_key_serializer", 0) is not None
        or getattr(producer, "_value_serializer", 0) is not None
    ):
        return None
    transactions = accumulator._txn_manager  # type: ignore[union-attr]
    transactional = transactions is not None and transactions.transactional_id is not None
    return accumulator._batch_size, transactional  # type: ignore[union-attr]


def key_partition(key: bytes | None, partitions: int) -> int:
    """The partition a record goes to, as aiokafka's and Java's default partitioner choose it
    (a record without a key goes to any partition)."""
    if key is None:
        return random.randrange(partitions)
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_M = np.uint32(0x5BD1E995)


def murmur2_many(keys: Sequence[bytes]) -> np.ndarray:
    """Kafka's murmur2 (seed 0x9747b28c) of every key, as uint32: what `murmur2` gives one
    key at a time, keys of one length processed together a 4-byte word at a time."""
    out = np.empty(len(keys), dtype=np.uint32)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_length[len(key)].append(i)
    for length, rows in by_length.items():
        data = np.frombuffer(b"".join(keys[i] for i in rows), dtype=np.uint8)
        data = data.reshape(len(rows), length)
        h = np.full(len(rows), (0x9747B28C ^ length) & 0xFFFFFFFF, dtype=np.uint32)
        whole = length // 4 * 4
        words = np.ascontiguousarray(data[:, :whole]).view("<u4")
        for j in range(whole // 4):
            k = words[:, j] * _M
            k ^= k >> np.uint32(24)
            k *= _M
            h *= _M
            h ^= k
        extra = length - whole
        if extra >= 3:
            h ^= data[:, whole + 2].astype(np.uint32) << np.uint32(16)
        if extra >= 2:
            h ^= data[:, whole + 1].astype(np.uint32) << np.uint32(8)
        if extra >= 1:
            h ^= data[:, whole].astype(np.uint32)
            h *= _M
        h ^= h >> np.uint32(13)
        h *= _M
        h ^= h >> np.uint32(15)
        out[rows] = h
    return out


def partitions_of(keys: Sequence[bytes], partitions: int) -> list[int]:
    """`key_partition` of every key (all not None)."""
    if not keys:
        return []
    return ((murmur2_many(keys) & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).tolist()


async def track_topics(producer: AIOKafkaProducer, topics: Sequence[str]) -> None:
    """Have `producer` track `topics` and know their partitions now (one metadata request
    for all), so that the first flush to each does not wait for one: a worker's first batch
    and its first alert each waited 40-180 ms for the metadata of topics new to its producer."""
    await asyncio.gather(*[producer.client.add_topic(topic) for topic in topics])
    for topic in topics:
        await producer.partitions_for(topic)


class DecisionMessages(Protocol):
    """A batch of decisions as the outbox takes them (fraud_core.scoring.DecisionBatch)."""

    def messages(self) -> list[tuple[bytes, bytes]]: ...
    def add_messages(self, sink: Any) -> None: ...


class Outbox:
    """Collects records per topic (in order) and sends them all in `flush`."""

    def __init__(self) -> None:
        self._topics: dict[str, list[tuple[bytes | None, bytes, int | None, Headers]]] = (
            defaultdict(list)
        )
        self._by_record: set[str] = set()
        """Topics with a record `record_batches` does not take (headers, or neither a key
        nor a partition): built record by record."""
        self._gathered: dict[str, Any] = {}
        """Topics' decision messages in compiled buffers (`fraud_native.Messages`)."""

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
        if headers or (key is None and partition is None):
            self._by_record.add(topic)
        self._topics[topic].append(
            (key, value, partition, list(headers) if headers else _NO_HEADERS)
        )

    def add_keyed(self, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Queue (key, value) records, each to its key's partition, without headers: `add`
        without its per-record arguments (a batch's decision records)."""
        self._topics[topic].extend(_keyed(records))

    def add_decisions(self, topic: str, batches: Iterable[DecisionMessages]) -> None:
        """Queue the messages of decision batches, each keyed by its transaction id. With
        fraud_native they are made straight into one compiled buffer for the topic, which
        the flush makes into record batches: no Python object a message on the way (a
        message's key and value, its tuple, the outbox's record and its lists cost the
        REST service more than making the JSON). Sent after the topic's other records."""
        if Messages is None:
            self.add_keyed(topic, (m for batch in batches for m in batch.messages()))
            return
        gathered = self._gathered.get(topic)
        if gathered is None:
            gathered = self._gathered[topic] = Messages()
        for batch in batches:
            batch.add_messages(gathered)

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
        by_record, self._by_record = self._by_record, set()
        gathered, self._gathered = self._gathered, {}
        plain = _plain_batches(producer)
        sent: list[tuple[asyncio.Future[Any], int]] = []
        for topic, messages in gathered.items():
            if plain is None or topic in topics:  # compressed, or the topic has other records
                topics[topic].extend(_keyed(messages.pairs()))
                continue
            count = await _partition_count(producer, topic)
            built = messages.record_batches(count, int(time.time() * 1000), *plain)
            sent += await _submit_all(producer, topic, built)
        for topic, records in topics.items():
            count = await _partition_count(producer, topic)
            if plain is not None and topic not in by_record:
                assert _record_batches is not None
                built = _record_batches(
                    [key for key, _, _, _ in records],
                    [value for _, value, _, _ in records],
                    [-1 if partition is None else partition for _, _, partition, _ in records],
                    count, int(time.time() * 1000), *plain,
                )  # fmt: skip
                sent += await _submit_all(producer, topic, built)
                continue
            keyed = [key for key, _, partition, _ in records if partition is None and key]
            chosen = iter(partitions_of(keyed, count))
            by_partition: dict[int, list[tuple[bytes | None, bytes, Headers]]] = defaultdict(list)
            for key, value, partition, headers in records:
                if partition is None:
                    partition = next(chosen) if key else key_partition(key, count)
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
                        sent.append(await _submit(producer, batch, topic, partition))
                        batch = producer.create_batch()
                if batch.record_count():
                    sent.append(await _submit(producer, batch, topic, partition))
        return sent


def _keyed(
    messages: Iterable[tuple[bytes, bytes]],
) -> Iterable[tuple[bytes, bytes, None, Headers]]:
    """(key, value) messages as the outbox's records: no partition chosen, no headers."""
    return ((key, value, None, _NO_HEADERS) for key, value in messages)


async def _submit_all(
    producer: AIOKafkaProducer, topic: str, built: list[tuple[int, Any]]
) -> list[tuple[asyncio.Future[Any], int]]:
    """`_submit` of compiled record batches, each to its (partition, batch)'s partition."""
    return [await _submit(producer, batch, topic, at) for at, batch in built]


async def _partition_count(producer: AIOKafkaProducer, topic: str) -> int:
    # Tracked, so every metadata refresh keeps it: aiokafka sends to a topic its metadata
    # already lists without tracking it, and a producer that tracks other topics then
    # refreshes it away; a batch waiting for its leader (a new topic, a broker restart)
    # then waits with no leader known, until its request timeout.
    await producer.client.add_topic(topic)
    return len(await producer.partitions_for(topic))


class _Batch(Protocol):
    """aiokafka's `BatchBuilder`, or a `fraud_native.RecordBatch`."""

    def close(self) -> None: ...
    def record_count(self) -> int: ...


async def _submit(
    producer: AIOKafkaProducer, batch: _Batch, topic: str, partition: int
) -> tuple[asyncio.Future[Any], int]:
    """Close `batch` (complete: it leaves without the producer's linger, and no one else's
    `send` can add to it) and hand it to `producer`: its future and its record count."""
    batch.close()
    future = await producer.send_batch(batch, topic, partition=partition)
    return future, batch.record_count()
