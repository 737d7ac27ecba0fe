"""The transport-agnostic data plane: transactions in, scores out (REST, the stream and tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import msgspec
import numpy as np

from fraud_core.features import HOUR_US, N_FEATURES, DataContract, feature_matrix
from fraud_core.inference import Scorer
from fraud_core.rollout import (
    CANARY,
    CHAMPION,
    SHADOW,
    DecisionInputs,
    MessageSink,
    add_decision_log_messages,
    below_share,
    canary_cards,
    decision_log_messages,
)
from fraud_core.schema import Transaction
from fraud_core.state import (
    CardEvent,
    CardState,
    MerchantState,
    card_features,
    merchant_features,
    stateful_block,
)

if TYPE_CHECKING:
    from fraud_core.model_store import Served


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
    role: str = CHAMPION
    """Which model answered: "champion", or "canary" for a card in the canary's share."""
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
    return transaction_matrix(transactions, stateful_rows(transactions, cards, merchants), contract)


def stateful_rows(
    transactions: Sequence[Transaction],
    cards: Sequence[CardState],
    merchants: Sequence[MerchantState],
) -> list[list[float]]:
    """Each transaction's stateful feature values, from its card's and merchant's state. A
    merchant's risk is the same for every transaction of one hour: worked out once per state
    and hour."""
    risks: dict[tuple[int, int], list[float]] = {}
    rows = []
    for t, card, merchant in zip(transactions, cards, merchants, strict=True):
        key = (id(merchant), t.timestamp_us // HOUR_US)  # `merchants` holds each state meanwhile
        risk = risks.get(key)
        if risk is None:
            risk = risks[key] = merchant_features(merchant, t.timestamp_us)
        rows.append(card_features(card, card_event(t)) + risk)
    return rows


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
    }
    return feature_matrix(columns, contract, stateful=stateful_block(stateful))


def build_scores(
    scorer: Scorer,
    transactions: Sequence[Transaction],
    x: np.ndarray,
    scores: np.ndarray,
    *,
    reasons: int = 3,
    degraded: bool = False,
    role: str = CHAMPION,
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
            role=role,
            features_degraded=degraded,
        )
        for t, s, r in zip(transactions, scores, top, strict=True)
    ]


def role_decisions(
    path: str,
    role: str,
    scorer: Scorer,
    transactions: Sequence[Transaction],
    x: np.ndarray,
    scores: np.ndarray,
    decided_at_us: int | None = None,
    degraded: bool = False,
) -> DecisionInputs:
    """`scorer`'s scores of `transactions` (inputs `x`) as the decision log takes them
    (`decision_records`, `decision_log_messages`)."""
    meta = scorer.metadata
    return DecisionInputs(
        path=path,
        role=role,
        model_name=meta.name,
        model_version=meta.version,
        threshold=meta.threshold,
        transaction_ids=[t.transaction_id for t in transactions],
        card_ids=[t.card_id for t in transactions],
        event_times_us=[t.timestamp_us for t in transactions],
        features=x,
        scores=scores,
        decided_at_us=decided_at_us,
        degraded=degraded,
    )


class RoleScores(NamedTuple):
    """The transactions of a batch (`rows`, positions in it) that one model scored in one
    role, with their model inputs and raw scores."""

    role: str
    scorer: Scorer
    rows: list[int]
    x: np.ndarray
    scores: np.ndarray

    @classmethod
    def of(cls, role: str, scorer: Scorer, rows: list[int], x: np.ndarray) -> RoleScores:
        """`scorer`'s scores of the model inputs `x` (of the transactions at `rows`)."""
        return cls(role, scorer, rows, x, scorer.score(x))

    def alerts(self) -> int:
        """How many of these scores are alerts (at the model's threshold, as the decision
        records compare them: in float32)."""
        return int(np.count_nonzero(self.scores >= np.float32(self.scorer.threshold)))


def score_by_role(
    served: Served, transactions: Sequence[Transaction], stateful: Sequence[Sequence[float]]
) -> list[RoleScores]:
    """Score each transaction with the model of its card's role (champion or canary), one
    onnxruntime call per role, each model's inputs encoded with its own vocabularies (the
    matrix is built once when the canary's vocabularies are the champion's, as they are for
    models trained on the same days: building it costs more than scoring it)."""
    if served.canary is None:
        return [score_as(CHAMPION, served.champion, list(range(len(transactions))),
                         transactions, stateful)]  # fmt: skip
    canary = canary_cards([t.card_id for t in transactions], served.canary_share)
    groups = {
        role: (scorer, rows)
        for role, scorer, rows in (
            (CHAMPION, served.champion, [i for i, c in enumerate(canary) if not c]),
            (CANARY, served.canary, [i for i, c in enumerate(canary) if c]),
        )
        if rows
    }
    if len(groups) == 1 or not served.canary_shares_contract:
        return [
            score_as(role, scorer, rows, transactions, stateful)
            for role, (scorer, rows) in groups.items()
        ]
    x = transaction_matrix(transactions, stateful, served.champion.contract)
    return [RoleScores.of(role, scorer, rows, x[rows]) for role, (scorer, rows) in groups.items()]


def role_answers(
    parts: Sequence[RoleScores],
    transactions: Sequence[Transaction],
    *,
    reasons: int = 3,
    degraded: bool = False,
) -> list[Score]:
    """The answers of `score_by_role`'s parts, in the transactions' order, each saying which
    model and role answered."""
    answers: list[Score | None] = [None] * len(transactions)
    for part in parts:
        chosen = [transactions[i] for i in part.rows]
        built = build_scores(
            part.scorer, chosen, part.x, part.scores, reasons=reasons, degraded=degraded,
            role=part.role,
        )  # fmt: skip
        for i, score in zip(part.rows, built, strict=True):
            answers[i] = score
    return [a for a in answers if a is not None]


def shadow_scores(
    served: Served,
    transactions: Sequence[Transaction],
    stateful: Sequence[Sequence[float]],
    parts: Sequence[RoleScores],
    sample: float = 1.0,
) -> RoleScores | None:
    """The challenger's scores of the transactions (of the share `sample` of them, by a hash
    of the transaction id), from the same stateful features; None without a challenger.
    `parts` are the batch's answering scores (`score_by_role`)."""
    if served.shadow is None or sample <= 0.0:
        return None
    rows = sampled(transactions, sample)
    if not rows:
        return None
    x = shadow_inputs(served, transactions, stateful, parts, rows)
    return RoleScores.of(SHADOW, served.shadow, rows, x)


def shadow_inputs(
    served: Served,
    transactions: Sequence[Transaction],
    stateful: Sequence[Sequence[float]],
    parts: Sequence[RoleScores],
    rows: list[int],
) -> np.ndarray:
    """The challenger's model inputs for the transactions at `rows`: the answering models'
    own when it encodes features as they do (no second feature matrix), else its own."""
    assert served.shadow is not None
    if served.shadow_shares_contract:
        if len(parts) == 1 and len(parts[0].rows) == len(transactions):
            return parts[0].x[rows]
        x = np.empty((len(transactions), N_FEATURES), dtype=np.float32)
        for part in parts:
            x[part.rows] = part.x
        return x[rows]
    chosen = [transactions[i] for i in rows]
    return transaction_matrix(chosen, [stateful[i] for i in rows], served.shadow.contract)


def sampled(transactions: Sequence[Transaction], share: float) -> list[int]:
    """Positions of the transactions in a `share` of them, by a hash of the transaction id
    (the same transactions on every path and retry)."""
    if share >= 1.0:
        return list(range(len(transactions)))
    return below_share([t.transaction_id for t in transactions], share)


def score_as(
    role: str,
    scorer: Scorer,
    rows: list[int],
    transactions: Sequence[Transaction],
    stateful: Sequence[Sequence[float]],
) -> RoleScores:
    """`scorer`'s scores, in `role`, of the transactions at `rows`."""
    everything = len(rows) == len(transactions)
    chosen = transactions if everything else [transactions[i] for i in rows]
    values = stateful if everything else [stateful[i] for i in rows]
    x = transaction_matrix(chosen, values, scorer.contract)
    return RoleScores.of(role, scorer, rows, x)


class DecisionBatch(NamedTuple):
    """One role's part of a batch as the decision log takes it: its messages are made by
    `messages()`, which the REST decision log calls in its sender, hundreds of decisions at a
    time, instead of on the path that answers requests."""

    path: str
    part: RoleScores
    transactions: Sequence[Transaction]
    """The batch's transactions (`part.rows` are positions in it)."""
    decided_at_us: int
    degraded: bool = False

    @property
    def size(self) -> int:
        return len(self.part.rows)

    def messages(self) -> list[tuple[bytes, bytes]]:
        """The decision topic's (key, value) messages of these decisions
        (`decision_log_messages`: compiled when fraud_native is installed)."""
        return decision_log_messages(**self._inputs())

    def add_messages(self, sink: MessageSink) -> None:
        """`messages()` added to `sink` (a `fraud_native.Messages`)."""
        add_decision_log_messages(sink, **self._inputs())

    def _inputs(self) -> DecisionInputs:
        part, transactions = self.part, self.transactions
        chosen = [transactions[i] for i in part.rows]
        return role_decisions(
            self.path, part.role, part.scorer, chosen, part.x, part.scores,
            self.decided_at_us, self.degraded,
        )  # fmt: skip
