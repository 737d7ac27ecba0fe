"""The online store's records: where each card's and merchant's state lives in Redis, its
bytes, and how long it lives.

The stream workers (`queue_states` on their asyncio pipeline), the stream's warm start and the
nightly `online_state` asset (`write_states`, `load_history`) write states here; the REST
service reads them with `card_key` and `merchant_key`. One definition, so every writer sets the
same keys, encoding and time to live.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import pyarrow as pa

from fraud_core.features import CARD_RETENTION_US, DAY_US, MERCHANT_RETENTION_US
from fraud_core.state import CardState, MerchantState, encode_state, end_states

STATE_KEY_PREFIX = "fraudscale:state:v1"

CARD_STATE_TTL_MS = (CARD_RETENTION_US + DAY_US) // 1000
"""A card's state outlives its longest window by a day: a card silent for longer has nothing
left in any window, and its missing key reads as the same empty state."""
MERCHANT_STATE_TTL_MS = (MERCHANT_RETENTION_US + DAY_US) // 1000


def card_key(card_id: str) -> str:
    """Where a card's state lives in the online store."""
    return f"{STATE_KEY_PREFIX}:card:{card_id}"


def merchant_key(merchant_id: str) -> str:
    """Where a merchant's label state lives in the online store."""
    return f"{STATE_KEY_PREFIX}:merchant:{merchant_id}"


class Pipeline(Protocol):
    """What `queue_states` needs of a redis-py pipeline (sync or asyncio)."""

    def set(self, name: str, value: bytes, *, px: int) -> Any: ...


def queue_states(
    pipe: Pipeline, cards: Mapping[str, CardState], merchants: Mapping[str, MerchantState]
) -> int:
    """Queue one SET with its TTL per state on `pipe` (executed by the caller); returns how
    many were queued."""
    for card_id, card in cards.items():
        pipe.set(card_key(card_id), encode_state(card), px=CARD_STATE_TTL_MS)
    for merchant_id, merchant in merchants.items():
        pipe.set(merchant_key(merchant_id), encode_state(merchant), px=MERCHANT_STATE_TTL_MS)
    return len(cards) + len(merchants)


def write_states(
    redis_url: str,
    cards: Mapping[str, CardState],
    merchants: Mapping[str, MerchantState],
    *,
    chunk: int = 10_000,
) -> None:
    """Write states to the Redis at `redis_url`, `chunk` keys per round trip."""
    import redis  # the serving, streaming and assets extras install it

    client = redis.Redis.from_url(redis_url)
    card_items, merchant_items = list(cards.items()), list(merchants.items())
    try:
        for start in range(0, max(len(card_items), len(merchant_items)), chunk):
            part = slice(start, start + chunk)
            pipe = client.pipeline(transaction=False)
            queue_states(pipe, dict(card_items[part]), dict(merchant_items[part]))
            pipe.execute()
    finally:
        client.close()


def load_history(history: pa.Table, redis_url: str, label_delay_us: int) -> tuple[int, int]:
    """Replay labelled `history` (fraud_core.state.end_states, labels known `label_delay_us`
    after their transactions) and write every card's and merchant's final state to the
    online store; returns how many of each."""
    cards, merchants = end_states(history, label_delay_us=label_delay_us)
    write_states(redis_url, cards, merchants)
    return len(cards), len(merchants)
