"""Load card and merchant states into the online store from labelled history (nightly job).

The stream workers keep these states current; this loader fills the store from history, e.g.
after a Redis loss or before the stream runs, with the same reference implementation.
"""

from __future__ import annotations

import pyarrow as pa
import redis

from fraud_core.state import CardState, MerchantState, card_key, encode_state, merchant_key, replay


def load_online_state(history: pa.Table, redis_url: str, *, chunk: int = 10_000) -> tuple[int, int]:
    """Replay `history` and write every card's and merchant's final state; returns the counts."""
    cards: dict[str, CardState] = {}
    merchants: dict[str, MerchantState] = {}
    replay(history, cards, merchants)
    client = redis.Redis.from_url(redis_url)
    items = [(card_key(k), encode_state(v)) for k, v in cards.items()]
    items += [(merchant_key(k), encode_state(v)) for k, v in merchants.items()]
    for start in range(0, len(items), chunk):
        client.mset(dict(items[start : start + chunk]))
    client.close()
    return len(cards), len(merchants)
