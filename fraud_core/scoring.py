"""The transport-agnostic data plane: transactions in, scores out (REST, the stream and tests)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

from fraud_core.features import DataContract, feature_matrix
from fraud_core.inference import Scorer
from fraud_core.schema import Transaction
from fraud_core.state import (
    CardEvent,
    CardState,
    MerchantState,
    card_features,
    merchant_features,
    stateful_columns,
)


class Score(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One transaction's answer. Not tracked by the garbage collector (it cannot hold a
    cycle): the REST cache keeps up to 100k of them, and tracked, they made every full
    collection a stall of tens of milliseconds for the requests in flight."""

    transaction_id: str
    score: float
    decision: str
    """"alert" at or above the model's threshold, else "allow"."""
    threshold: float
    model_name: str
    model_version: str
    reasons: tuple[str, ...]
    cached: bool = False
    features_degraded: bool = False
    """True when card/merchant state could not be read and the contract's defaults stood in."""
    server_time_us: int = 0
    """Time spent in the server for this request, in microseconds."""


def transaction_features(
    transactions: Sequence[Transaction],
    cards: Sequence[CardState],
    merchants: Sequence[MerchantState],
    contract: DataContract,
) -> np.ndarray:
    """Model input for transactions given each one's card and merchant state before it, with
    the model's vocabularies.

    The stateful part is the fraud_core reference implementation, so REST computes what the
    stream and the batch path compute for the same history.
    """
    stateful = [
        card_features(card, card_event(t)) + merchant_features(merchant, t.timestamp_us)
        for t, card, merchant in zip(transactions, cards, merchants, strict=True)
    ]
    return transaction_matrix(transactions, stateful, contract)


def card_event(transaction: Transaction) -> CardEvent:
    t = transaction
    return CardEvent(t.timestamp_us, t.amount, t.merchant_id, t.country)


def transaction_matrix(
    transactions: Sequence[Transaction],
    stateful: Sequence[Sequence[float]],
    contract: DataContract,
) -> np.ndarray:
    """The feature matrix of transactions whose stateful feature values are already known."""
    columns = {
        "amount": [t.amount for t in transactions],
        "timestamp_us": [t.timestamp_us for t in transactions],
        "merchant_category": [t.merchant_category for t in transactions],
        "channel": [t.channel for t in transactions],
        "currency": [t.currency for t in transactions],
        "country": [t.country for t in transactions],
        **stateful_columns(stateful),
    }
    return feature_matrix(columns, contract)


def build_scores(
    scorer: Scorer,
    transactions: Sequence[Transaction],
    x: np.ndarray,
    scores: np.ndarray,
    *,
    reasons: int = 3,
    degraded: bool = False,
) -> list[Score]:
    """The answers for scored transactions: decision at the model's threshold, top reasons."""
    top = scorer.reasons(x, k=reasons)
    threshold = np.float32(scorer.threshold)
    meta = scorer.metadata
    return [
        Score(
            transaction_id=t.transaction_id,
            score=float(s),
            decision="alert" if s >= threshold else "allow",
            threshold=meta.threshold,
            model_name=meta.name,
            model_version=meta.version,
            reasons=tuple(r),
            features_degraded=degraded,
        )
        for t, s, r in zip(transactions, scores, top, strict=True)
    ]
