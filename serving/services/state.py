"""Where REST reads each card's and merchant's state from before scoring."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import msgspec

from fraud_core.online_store import REDIS_FAULTS, card_key, merchant_key
from fraud_core.state import CardState, MerchantState, decode_card_state, read_merchant_state
from serving.services.redis_lane import RedisLane
from serving.telemetry import Throttled

log = logging.getLogger(__name__)


class States(msgspec.Struct, frozen=True):
    cards: list[CardState]
    merchants: list[MerchantState]
    degraded: bool = False
    """True when the online store could not be read and contract defaults stand in."""


class OnlineState(Protocol):
    async def fetch(self, card_ids: Sequence[str], merchant_ids: Sequence[str]) -> States: ...

    async def close(self) -> None: ...


def _fresh(card_ids: Sequence[str], merchant_ids: Sequence[str], degraded: bool) -> States:
    return States(
        [CardState() for _ in card_ids], [MerchantState() for _ in merchant_ids], degraded
    )


class NoOnlineState:
    """No online store: every card and merchant is new, so stateful features take the
    contract's defaults (what a card without history gets on every path)."""

    async def fetch(self, card_ids: Sequence[str], merchant_ids: Sequence[str]) -> States:
        return _fresh(card_ids, merchant_ids, degraded=False)

    async def close(self) -> None:
        return None


class RedisOnlineState:
    """Card and merchant states from Redis, all of a batch's keys in one round trip (one
    MGET; on a cluster, one MGET per slot pipelined to each node). A key several transactions
    share (a busy merchant, a card paying twice) is read and decoded once.

    When Redis is down or slower than the timeout, requests are still answered, with
    contract defaults for the state and `degraded` set; the client reconnects by itself on
    a later request. Errors are counted for the metrics.
    """

    def __init__(self, redis: RedisLane) -> None:
        """`redis`: with the time a read may take in all before defaults stand in."""
        self.redis = redis
        self.errors = 0
        self._unavailable = Throttled(log)

    async def fetch(self, card_ids: Sequence[str], merchant_ids: Sequence[str]) -> States:
        cards = dict.fromkeys(card_ids)
        merchants = dict.fromkeys(merchant_ids)
        keys = [card_key(c) for c in cards] + [merchant_key(m) for m in merchants]
        try:
            # Raw MessagePack bytes (or None).
            values = await self.redis.read(keys)
        except REDIS_FAULTS as exc:
            self.errors += 1
            self._unavailable.warning("online state unavailable, scoring with defaults: %r", exc)
            return _fresh(card_ids, merchant_ids, degraded=True)
        n = len(cards)
        try:
            # States are only read here (features never change them), so transactions of one
            # card or merchant share one decoded state; a merchant's is shared with the
            # requests before it while its encoding is the same.
            card_states = dict(zip(cards, map(decode_card_state, values[:n]), strict=True))
            merchant_states = dict(
                zip(merchants, map(read_merchant_state, values[n:]), strict=True)
            )
            return States(
                [card_states[c] for c in card_ids], [merchant_states[m] for m in merchant_ids]
            )
        except msgspec.DecodeError as exc:
            self.errors += 1
            log.error("unreadable online state, scoring with defaults: %s", exc)
            return _fresh(card_ids, merchant_ids, degraded=True)

    async def close(self) -> None:
        return None  # the client belongs to the app, which closes it
