"""What a stream worker does with a batch of Kafka records, apart from Kafka itself.

Decode and validate (a bad record becomes a dead letter with its reason), step each card's
state with the fraud_core reference implementation in offset order, score the batch in one
onnxruntime call, and say which states changed. The agents feed it records and write what it
returns to the output topics, the tables and Redis.

Redelivery. Kafka redelivers every record after the last committed offset when a worker
dies, but the table entries a worker wrote to the changelog before it died may already hold
later records (the changelog is written before offsets are committed). A redelivered record
must not be applied twice, and must be scored from the state it was first scored from, not
from the later one: trimming to the 7-day horizon of a later transaction drops entries
inside its windows, a later transaction with an earlier timestamp would enter them, and
labels applied meanwhile would change its merchant risk.

So each card entry keeps, besides its state and the last input offset applied to it, the
stateful features of every transaction applied to it whose offset is not yet committed
(`CardEntry.uncommitted`). These travel with the entry through the changelog. A record at or
below the entry's offset was applied before: it is scored again from its remembered features,
exactly as it was the first time (merchant features included), and the state is left alone.
A write drops what the committed offset of its partition puts beyond redelivery; until the
worker knows that offset (before its first commit) it drops nothing. The tables therefore
always equal one replay of the input, and every score of a transaction is the same score.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import msgspec

from fraud_core.features import HOUR_US
from fraud_core.model_store import Served
from fraud_core.rollout import now_us
from fraud_core.schema import LabelEvent, SchemaError, Transaction, decode_json
from fraud_core.scoring import (
    DecisionBatch,
    Score,
    card_event,
    role_answers,
    score_by_role,
    shadow_scores,
)
from fraud_core.state import (
    CardState,
    MerchantState,
    add_card_event,
    add_label,
    card_features,
    merchant_features,
)


class Applied(msgspec.Struct, array_like=True):
    """A transaction applied to a card's state whose offset may still be redelivered: its
    input offset and the stateful features it was scored with."""

    offset: int
    features: list[float]


class CardEntry(msgspec.Struct, array_like=True):
    """A card's state in the card table, with the last transactions offset applied to it."""

    offset: int
    state: CardState
    uncommitted: list[Applied] = msgspec.field(default_factory=list)
    """Transactions applied to `state` whose offsets are not known to be committed."""


class MerchantEntry(msgspec.Struct, array_like=True):
    """A merchant's label state in the merchant table, with the last labels offset applied."""

    offset: int
    state: MerchantState


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """What the alerts topic carries: the transaction and its score, reasons included."""

    transaction: Transaction
    score: Score


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, as the pipeline needs it."""

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int

    @classmethod
    def of(cls, message: Any) -> Record:
        """From a Faust message or an aiokafka ConsumerRecord (the same five attributes)."""
        m = message
        return cls(m.key, m.value or b"", m.topic, m.partition, m.offset)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be processed: its original bytes, why, and where it came from."""

    record: Record
    error: SchemaError

    def headers(self) -> list[tuple[str, bytes]]:
        r, e = self.record, self.error
        return [
            ("error.field", e.field.encode()),
            ("error.reason", e.reason.encode()),
            ("error.kind", b"malformed" if e.malformed else b"invalid"),
            ("source.topic", r.topic.encode()),
            ("source.partition", str(r.partition).encode()),
            ("source.offset", str(r.offset).encode()),
        ]


T = TypeVar("T", Transaction, LabelEvent)

_entry_encoder = msgspec.msgpack.Encoder()
_card_entry = msgspec.msgpack.Decoder(CardEntry)
_merchant_entry = msgspec.msgpack.Decoder(MerchantEntry)


def encode_entry(entry: CardEntry | MerchantEntry) -> bytes:
    return _entry_encoder.encode(entry)


def decode_card_entry(data: bytes | None) -> CardEntry:
    return CardEntry(-1, CardState()) if data is None else _card_entry.decode(data)


def decode_merchant_entry(data: bytes | None) -> MerchantEntry:
    return MerchantEntry(-1, MerchantState()) if data is None else _merchant_entry.decode(data)


MerchantRisk: TypeAlias = Callable[[str, int], list[float]]
"""A merchant's risk features (`merchant_features`) at an hour (hours since the epoch)."""


class HourlyRisk(dict[tuple[str, int], list[float]]):
    """One batch's merchant risk by (merchant id, hour): `merchant_risk` is asked once for
    each (a merchant's risk is the same for every transaction of one hour)."""

    def __init__(self, merchant_risk: MerchantRisk) -> None:
        super().__init__()
        self._merchant_risk = merchant_risk

    def __missing__(self, key: tuple[str, int]) -> list[float]:
        risk = self[key] = self._merchant_risk(*key)
        return risk


@functools.lru_cache(maxsize=4096)
def entry_risk(data: bytes | None, hour: int) -> list[float]:
    """`merchant_features` of an encoded merchant entry at an hour, remembered for the last
    4,096 (entry, hour) pairs: an entry changes only when a label for its merchant arrives,
    so a merchant's risk is worked out about once an hour instead of once a batch (a month
    of labelled hours is ~23 µs to decode and ~10 µs to add up). The bytes are the key, so a
    changed entry is a new key. The list is shared: callers must not change it."""
    return merchant_features(decode_merchant_entry(data).state, hour * HOUR_US)


def _decode(
    records: Sequence[Record], kind: type[T], key_field: str
) -> tuple[list[tuple[Record, T]], list[DeadLetter]]:
    valid: list[tuple[Record, T]] = []
    dead: list[DeadLetter] = []
    for record in records:
        try:
            value = decode_json(record.value, kind)
        except SchemaError as exc:
            dead.append(DeadLetter(record, exc))
            continue
        expected = getattr(value, key_field)
        if record.key is None or record.key.decode(errors="replace") != expected:
            # Keys decide partitions, and a partition owns its keys' state: a record under
            # another key would update state on a worker that does not own it.
            reason = f"record key {record.key!r} must equal the {key_field} {expected!r}"
            dead.append(DeadLetter(record, SchemaError(key_field, reason)))
            continue
        valid.append((record, value))
    return valid, dead


@dataclass
class ScoredBatch:
    scores: list[Score]
    transactions: list[Transaction]
    dead: list[DeadLetter]
    cards: dict[str, tuple[int, CardEntry]] = field(default_factory=dict)
    """Card entries this batch changed, by card: (input partition, entry); write each once."""
    redelivered: int = 0
    """Transactions applied before (a redelivery): scored again from their first features."""
    unremembered: int = 0
    """Redelivered transactions whose first features were no longer kept (their offset was
    committed, so only a reset of the group's offsets replays them): scored from the state."""
    newest: dict[int, int] = field(default_factory=dict)
    """Per input partition, the newest event time (us) this batch applied to card state."""
    decisions: list[DecisionBatch] = field(default_factory=list)
    """The decision log's decisions by role: every role's, the challenger's shadow scores
    included (`DecisionBatch.messages` makes their records)."""


def _no_commit_known(partition: int) -> int:
    return 0


def score_transactions(
    records: Sequence[Record],
    served: Served,
    card_entry: Callable[[str], CardEntry],
    merchant_risk: MerchantRisk,
    *,
    committed: Callable[[int], int] = _no_commit_known,
    reasons: int = 3,
    decisions: bool = False,
    shadow_sample: float = 1.0,
) -> ScoredBatch:
    """Scores for a batch of transaction records, in order, and the card entries it changed.

    Each card is answered by its role's model (champion, or canary for the canary's share of
    cards); with `decisions`, the batch's decision-log records come back too, the
    challenger's shadow scores (of `shadow_sample` of the transactions) among them.
    `committed(partition)` is the input partition's committed offset (the next one a
    restarted worker reads): features remembered for lower offsets are dropped.
    """
    valid, dead = _decode(records, Transaction, "card_id")
    touched: dict[str, tuple[int, CardEntry]] = {}
    risks = HourlyRisk(merchant_risk)
    stateful: list[list[float]] = []
    redelivered = unremembered = 0
    newest: dict[int, int] = {}
    for record, t in valid:
        if t.card_id not in touched:
            touched[t.card_id] = (record.partition, card_entry(t.card_id))
        entry = touched[t.card_id][1]
        if record.offset <= entry.offset:  # applied before a crash or a rebalance
            redelivered += 1
            first = next((a.features for a in entry.uncommitted if a.offset == record.offset), None)
            if first is not None:
                stateful.append(first)
                continue
            unremembered += 1
        event = card_event(t)
        features = card_features(entry.state, event) + risks[t.merchant_id, event.ts_us // HOUR_US]
        stateful.append(features)
        if record.offset > entry.offset:
            add_card_event(entry.state, event)
            entry.offset = record.offset
            entry.uncommitted.append(Applied(record.offset, features))
            newest[record.partition] = max(newest.get(record.partition, 0), event.ts_us)
    for partition, entry in touched.values():
        floor = committed(partition)
        if entry.uncommitted and entry.uncommitted[0].offset < floor:
            entry.uncommitted = [a for a in entry.uncommitted if a.offset >= floor]
    transactions = [t for _, t in valid]
    if not transactions:
        return ScoredBatch([], [], dead)
    decided_at = now_us()
    parts = score_by_role(served, transactions, stateful)
    scores = role_answers(parts, transactions, reasons=reasons)
    logged = []
    if decisions:
        shadow = shadow_scores(served, transactions, stateful, parts, shadow_sample)
        logged = [
            DecisionBatch("stream", part, transactions, decided_at)
            for part in ([*parts, shadow] if shadow else parts)
        ]
    return ScoredBatch(
        scores,
        transactions, dead, touched, redelivered, unremembered, newest, logged,
    )  # fmt: skip


@dataclass
class LabelledBatch:
    labels: int
    dead: list[DeadLetter]
    merchants: dict[str, tuple[int, MerchantEntry]]
    """Merchant entries this batch changed: (input partition, entry)."""
    newest: dict[int, int] = field(default_factory=dict)
    """Per input partition, the newest label time (us) this batch applied."""


def apply_labels(
    records: Sequence[Record], merchant_entry: Callable[[str], MerchantEntry]
) -> LabelledBatch:
    """Fold a batch of label records into merchant states; returns the entries it changed."""
    valid, dead = _decode(records, LabelEvent, "merchant_id")
    touched: dict[str, tuple[int, MerchantEntry]] = {}
    newest: dict[int, int] = {}
    applied = 0
    for record, label in valid:
        if label.merchant_id not in touched:
            touched[label.merchant_id] = (record.partition, merchant_entry(label.merchant_id))
        entry = touched[label.merchant_id][1]
        if record.offset > entry.offset:
            add_label(entry.state, label.label_time_us, label.is_fraud)
            entry.offset = record.offset
            applied += 1
            newest[record.partition] = max(newest.get(record.partition, 0), label.label_time_us)
    return LabelledBatch(applied, dead, touched, newest)
