"""The transaction and label schemas: msgspec Structs for the wire, Arrow schemas for files.

Categorical columns (merchant_category, currency, country, channel) are open strings: a value
the model has never seen is valid and maps to the "unknown" code in the feature function.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, TypeVar, overload

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_AMOUNT = 1_000_000.0
"""Largest amount accepted in one transaction; anything above is treated as corrupt input."""

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
MICROS_PER_SECOND = 1_000_000

Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Category = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Amount = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_AMOUNT)]
UtcTimestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]


class _TimestampMicros:
    """`Transaction.timestamp_us`: computed on first read and kept in the instance's
    `__dict__`, which later reads find before this descriptor (the features, the card state,
    the merchant risk and the decision log each read it; a conversion costs 0.5 µs, and
    `functools.cached_property` takes a lock on every first read in Python 3.11)."""

    @overload
    def __get__(self, transaction: None, owner: type) -> _TimestampMicros: ...
    @overload
    def __get__(self, transaction: Transaction, owner: type | None = None) -> int: ...
    def __get__(
        self, transaction: Transaction | None, owner: type | None = None
    ) -> int | _TimestampMicros:
        if transaction is None:  # read on the class (introspection, documentation)
            return self
        micros: int = to_micros(transaction.timestamp)
        transaction.__dict__["timestamp_us"] = micros
        return micros


class Transaction(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    """One card transaction as it arrives on the wire (REST body, Kafka event)."""

    transaction_id: Identifier
    card_id: Identifier
    merchant_id: Identifier
    merchant_category: Category
    amount: Amount
    currency: Category
    country: Category
    channel: Category
    timestamp: UtcTimestamp

    timestamp_us = _TimestampMicros()
    """Microseconds since the epoch (`to_micros(timestamp)`)."""


class LabelEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A fraud label that became known at `label_time` (a chargeback, or its absence)."""

    transaction_id: Identifier
    merchant_id: Identifier
    label_time: UtcTimestamp
    is_fraud: bool

    @property
    def label_time_us(self) -> int:
        return to_micros(self.label_time)


TRANSACTION_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("card_id", pa.string(), nullable=False),
        pa.field("merchant_id", pa.string(), nullable=False),
        pa.field("merchant_category", pa.string(), nullable=False),
        pa.field("amount", pa.float64(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("country", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
"""Arrow schema of transactions in files; `is_fraud` is added in labelled history."""

LABELLED_SCHEMA = TRANSACTION_SCHEMA.append(pa.field("is_fraud", pa.bool_(), nullable=True))
"""History: a null `is_fraud` is a transaction whose label is not known (yet), on every path."""

TRANSACTION_COLUMNS = tuple(TRANSACTION_SCHEMA.names)
STRING_COLUMNS = tuple(f.name for f in TRANSACTION_SCHEMA if pa.types.is_string(f.type))

_FIELD_PATH = re.compile(r" - at `\$\.?([^`]*)`")
_MISSING_FIELD = re.compile(r"Object missing required field `([^`]*)`")


class SchemaError(ValueError):
    """Input that does not fit the transaction schema, naming the field and the reason."""

    def __init__(
        self, field: str, reason: str, *, where: str = "", malformed: bool = False
    ) -> None:
        self.field = field
        self.reason = reason
        self.where = where
        self.malformed = malformed
        """True when the payload is not even well-formed (not JSON), rather than invalid."""
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}field {field!r}: {reason}" if field else f"{prefix}{reason}")


def to_micros(ts: dt.datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    return (ts - EPOCH) // _MICROSECOND  # a constant: building the timedelta cost 2/3 of it


def from_micros(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)


def schema_error(exc: msgspec.ValidationError | msgspec.DecodeError) -> SchemaError:
    """Turn msgspec's message ("Expected ... - at `$.amount`") into field + reason."""
    message = str(exc)
    match = _FIELD_PATH.search(message)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return SchemaError("", f"malformed payload: {message}", malformed=True)
    path = match.group(1) if match else ""
    reason = message[: match.start()] if match else message
    missing = _MISSING_FIELD.match(reason)
    if missing:
        field = f"{path}.{missing.group(1)}" if path else missing.group(1)
        return SchemaError(field, "required field is missing")
    return SchemaError(path, reason)


T = TypeVar("T")
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def decode_json(payload: bytes | str, kind: type[T]) -> T:
    """Decode and validate one JSON object of a schema type, raising SchemaError."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise schema_error(exc) from None


def row_problems(table: pa.Table) -> pa.Array:
    """Per row, the first reason the row breaks the schema, or null for a valid row.

    Vectorised: the batch path uses it to quarantine bad rows with their reasons, the file
    reader to name the first bad row. Column types must already match TRANSACTION_SCHEMA.
    """
    n = table.num_rows
    reasons = pa.nulls(n, pa.string())
    checks: list[tuple[pa.Array, str]] = []
    for name in TRANSACTION_COLUMNS:
        column = table.column(name)
        checks.append((pc.is_null(column), f"{name}: missing value"))
        if name in STRING_COLUMNS:
            length = pc.utf8_length(column)
            checks.append((pc.equal(length, 0), f"{name}: empty string"))
            limit = 32 if name in ("merchant_category", "currency", "country", "channel") else 64
            checks.append((pc.greater(length, limit), f"{name}: longer than {limit} characters"))
    amount = table.column("amount")
    checks.append((pc.invert(pc.is_finite(amount)), "amount: not a finite number"))
    checks.append((pc.less(amount, 0.0), "amount: negative"))
    checks.append((pc.greater(amount, MAX_AMOUNT), f"amount: above {MAX_AMOUNT:,.0f}"))
    # Later checks fill only rows still without a reason, so each row keeps its first problem.
    for failed, reason in checks:
        failed = pc.fill_null(failed, False)
        reasons = pc.if_else(pc.and_(failed, pc.is_null(reasons)), reason, reasons)
    return reasons.combine_chunks() if isinstance(reasons, pa.ChunkedArray) else reasons


def split_valid(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(valid rows, rejected rows with a `reason` column), keeping the original order."""
    reasons = row_problems(table)
    bad = pc.is_valid(reasons)
    rejected = table.filter(bad).append_column("reason", pc.drop_null(reasons))
    return table.filter(pc.invert(bad)), rejected


def transactions_to_arrow(transactions: list[Transaction]) -> pa.Table:
    """Arrow table of wire transactions in TRANSACTION_SCHEMA."""
    columns = {name: [getattr(t, name) for t in transactions] for name in TRANSACTION_COLUMNS}
    return pa.table(columns, schema=TRANSACTION_SCHEMA)


def timestamps_us(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """int64 microseconds since the epoch of a UTC timestamp column."""
    return np.asarray(column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()))
