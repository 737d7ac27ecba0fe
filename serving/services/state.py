"""Where REST reads each card's and merchant's state from before scoring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fraud_core.state import CardState, MerchantState


class OnlineState(Protocol):
    async def fetch(
        self, card_ids: Sequence[str], merchant_ids: Sequence[str]
    ) -> tuple[list[CardState], list[MerchantState]]: ...


class NoOnlineState:
    """No online store: every card and merchant is new, so stateful features take the
    contract's defaults (what a card without history gets on every path)."""

    async def fetch(
        self, card_ids: Sequence[str], merchant_ids: Sequence[str]
    ) -> tuple[list[CardState], list[MerchantState]]:
        return [CardState() for _ in card_ids], [MerchantState() for _ in merchant_ids]
