"""The outbox puts each key where Kafka's default partitioner (aiokafka's, Java's) would, and
its compiled record batches are the ones aiokafka's builder makes."""

from __future__ import annotations

import random

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from fraud_core.outbox import (
    RECORD_BATCH_BYTES,
    _plain_batches,
    key_partition,
    murmur2_many,
    partitions_of,
)
from fraud_native import RecordBatch, record_batches

pytestmark = pytest.mark.unit


def test_murmur2_of_many_keys_equals_kafkas_one_key_at_a_time() -> None:
    rng = random.Random(3)
    keys = [rng.randbytes(rng.randrange(0, 41)) for _ in range(3000)]
    keys += [f"t{i}".encode() for i in range(2000)]  # transaction ids: one length, many keys
    assert murmur2_many(keys).tolist() == [murmur2(k) & 0xFFFFFFFF for k in keys]
    for partitions in (1, 4, 7, 12):
        assert partitions_of(keys, partitions) == [key_partition(k, partitions) for k in keys]


def _aiokafka_batches(
    records: list[tuple[bytes | None, bytes, int]], count: int, timestamp_ms: int,
    max_bytes: int, transactional: bool,
) -> dict[int, list[BatchBuilder]]:  # fmt: skip
    """The specification: each record to its partition (its own, or its key's), appended
    one by one to aiokafka's `BatchBuilder`s, a new one whenever the last is full."""
    out: dict[int, list[BatchBuilder]] = {}
    for key, value, partition in records:
        if partition < 0:
            partition = key_partition(key, count)
        batches = out.setdefault(partition, [])
        if not batches:
            batches.append(BatchBuilder(max_bytes, 0, is_transactional=transactional))
        while batches[-1].append(timestamp=timestamp_ms, key=key, value=value, headers=[]) is None:
            batches.append(BatchBuilder(max_bytes, 0, is_transactional=transactional))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_record_batches_are_aiokafkas_byte_for_byte(seed: int) -> None:
    """`fraud_native.record_batches` (the outbox's path with the `native` extra) makes, per
    partition, the record batches aiokafka's `BatchBuilder` makes of the same records: the
    same partitions, the same split at the batch size (a record larger than a batch alone in
    one), the same bytes once the producer's state is set; transactional or not."""
    rng = random.Random(seed)
    for _ in range(20):
        count, max_bytes = rng.randrange(1, 13), rng.choice([120, 1000, 16384, 512 * 1024])
        records: list[tuple[bytes | None, bytes, int]] = []
        for _ in range(rng.randrange(0, 800)):
            explicit = rng.random() < 0.3
            key = rng.choice([None, rng.randbytes(rng.randrange(0, 40))]) if explicit else (
                rng.randbytes(rng.randrange(0, 40))
            )  # fmt: skip
            size = rng.choice([0, rng.randrange(1, 300), rng.randrange(300, 3000)])
            records.append((key, rng.randbytes(size), rng.randrange(count) if explicit else -1))
        timestamp_ms, transactional = rng.randrange(2**41), rng.random() < 0.3
        expected = _aiokafka_batches(records, count, timestamp_ms, max_bytes, transactional)
        built = record_batches(
            [k for k, _, _ in records], [v for _, v, _ in records], [p for _, _, p in records],
            count, timestamp_ms, max_bytes, transactional,
        )  # fmt: skip
        compiled: dict[int, list[RecordBatch]] = {}
        for partition, batch in built:
            compiled.setdefault(partition, []).append(batch)
        assert compiled.keys() == expected.keys()
        for partition, batches in expected.items():
            assert len(compiled[partition]) == len(batches)
            for ours, theirs in zip(compiled[partition], batches, strict=True):
                state = (rng.randrange(2**40), rng.randrange(2**15), rng.randrange(2**31))
                ours._set_producer_state(*state)
                theirs._set_producer_state(*state)
                assert ours.record_count() == theirs.record_count()
                assert ours._build() == bytes(theirs._build())


async def test_the_projects_producers_take_the_compiled_record_batches() -> None:
    """The outbox builds record batches in one compiled call for producers set up as this
    project's are (uncompressed, no serializers, idempotent or not): a change in aiokafka's
    attributes would otherwise send it back to the record-by-record path unnoticed."""
    producers = [
        AIOKafkaProducer(
            bootstrap_servers="127.0.0.1:9",
            enable_idempotence=idempotent,
            max_batch_size=RECORD_BATCH_BYTES,
        )
        for idempotent in (False, True)
    ]
    compressing = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", compression_type="gzip")
    try:
        assert [_plain_batches(p) for p in producers] == [(RECORD_BATCH_BYTES, False)] * 2
        assert _plain_batches(compressing) is None
    finally:
        for producer in [*producers, compressing]:
            await producer.stop()
