"""What a stream worker does with a batch of Kafka records, apart from Kafka itself.

Decode and validate (a bad record becomes a dead letter with its reason), step each card's
state with the fraud_core reference implementation in offset order, score the batch in one
onnxruntime call, and say which states changed. The agents feed it records and write what it
returns to the output topics, the tables and Redis.

Idempotent state: each table entry remembers the last input offset applied to it. After a
crash, Kafka redelivers records past the last committed offset; those already applied are
scored again from the same state (a card window only looks at strictly earlier transactions)
and not applied twice, so the tables always equal one replay of the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from fraud_core.schema import LabelEvent, SchemaError, Transaction, decode_json
from fraud_core.scorer import Scorer
from fraud_core.scoring import Score, build_scores, card_event, transaction_matrix
from fraud_core.state import (
    CardState,
    MerchantState,
    add_card_event,
    add_label,
    card_features,
    merchant_features,
)


class CardEntry(msgspec.Struct, array_like=True):
    """A card's state in the card table, with the last transactions offset applied to it."""

    offset: int
    state: CardState


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


def score_transactions(
    records: Sequence[Record],
    scorer: Scorer,
    card_entry: Callable[[str], CardEntry],
    merchant_state: Callable[[str], MerchantState],
    *,
    reasons: int = 3,
) -> ScoredBatch:
    """Scores for a batch of transaction records, in order, and the card entries it changed."""
    valid, dead = _decode(records, Transaction, "card_id")
    touched: dict[str, tuple[int, CardEntry]] = {}
    merchants: dict[str, MerchantState] = {}
    stateful: list[list[float]] = []
    for record, t in valid:
        if t.card_id not in touched:
            touched[t.card_id] = (record.partition, card_entry(t.card_id))
        entry = touched[t.card_id][1]
        merchant = merchants.get(t.merchant_id)
        if merchant is None:
            merchant = merchants[t.merchant_id] = merchant_state(t.merchant_id)
        event = card_event(t)
        stateful.append(
            card_features(entry.state, event) + merchant_features(merchant, t.timestamp_us)
        )
        if record.offset > entry.offset:  # not applied before a crash
            add_card_event(entry.state, event)
            entry.offset = record.offset
    transactions = [t for _, t in valid]
    if not transactions:
        return ScoredBatch([], [], dead)
    x = transaction_matrix(transactions, stateful)
    scores = build_scores(scorer, transactions, x, scorer.score(x), reasons=reasons)
    return ScoredBatch(scores, transactions, dead, touched)


@dataclass
class LabelledBatch:
    labels: int
    dead: list[DeadLetter]
    merchants: dict[str, tuple[int, MerchantEntry]]
    """Merchant entries this batch changed: (input partition, entry)."""


def apply_labels(
    records: Sequence[Record], merchant_entry: Callable[[str], MerchantEntry]
) -> LabelledBatch:
    """Fold a batch of label records into merchant states; returns the entries it changed."""
    valid, dead = _decode(records, LabelEvent, "merchant_id")
    touched: dict[str, tuple[int, MerchantEntry]] = {}
    applied = 0
    for record, label in valid:
        if label.merchant_id not in touched:
            touched[label.merchant_id] = (record.partition, merchant_entry(label.merchant_id))
        entry = touched[label.merchant_id][1]
        if record.offset > entry.offset:
            add_label(entry.state, label.label_time_us, label.is_fraud)
            entry.offset = record.offset
            applied += 1
    return LabelledBatch(applied, dead, touched)
