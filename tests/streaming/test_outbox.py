"""The outbox puts each key where Kafka's default partitioner (aiokafka's, Java's) would."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import murmur2

from fraud_core.outbox import key_partition, murmur2_many, partitions_of

pytestmark = pytest.mark.unit


def test_murmur2_of_many_keys_equals_kafkas_one_key_at_a_time() -> None:
    rng = random.Random(3)
    keys = [rng.randbytes(rng.randrange(0, 41)) for _ in range(3000)]
    keys += [f"t{i}".encode() for i in range(2000)]  # transaction ids: one length, many keys
    assert murmur2_many(keys).tolist() == [murmur2(k) & 0xFFFFFFFF for k in keys]
    for partitions in (1, 4, 7, 12):
        assert partitions_of(keys, partitions) == [key_partition(k, partitions) for k in keys]
