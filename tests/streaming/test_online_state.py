"""The stream workers' copy of the states in Redis, on each shape of Redis a deployment runs:
what a worker writes, REST's reader reads back (one round trip, keys across a cluster's
slots)."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest

from fraud_core.features import DEFAULT_LABEL_DELAY_US
from fraud_core.online_store import card_key, connect_async, merchant_key, read_many
from fraud_core.state import decode_card_state, decode_merchant_state, end_states
from streaming.agents import OnlineStateWriter
from tests.conftest import RedisTopology

pytestmark = pytest.mark.integration


def test_a_workers_states_read_back_from_every_topology(
    redis_topology: RedisTopology, history: pa.Table
) -> None:
    cards, merchants = end_states(history, label_delay_us=DEFAULT_LABEL_DELAY_US)

    async def write_and_read() -> list[bytes | None]:
        writer = OnlineStateWriter(redis_topology.url)
        await writer.write(cards, merchants)
        assert writer.client is not None
        await writer.client.aclose()
        reader = connect_async(redis_topology.url, timeout=1.0)
        keys = [card_key(c) for c in cards] + [merchant_key(m) for m in merchants]
        try:
            return await read_many(reader, keys, timeout=5.0)
        finally:
            await reader.aclose()

    values = asyncio.run(write_and_read())
    assert [decode_card_state(v) for v in values[: len(cards)]] == list(cards.values())
    assert [decode_merchant_state(v) for v in values[len(cards) :]] == list(merchants.values())
