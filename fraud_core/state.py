"""The incremental reference implementation of the stateful features.

State in, event in -> features out, state out. The stream workers keep `CardState` and
`MerchantState` in Faust tables, REST reads them from Redis, and tests use `replay` as the
ground truth that Spark's window functions must match. States are small msgspec records,
serialised as MessagePack (never pickle).
"""

from __future__ import annotations

import functools
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias, cast

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraud_core.features import (
    CARD_RETENTION_US,
    CARD_WINDOWS,
    DEFAULT_LABEL_DELAY_US,
    HOUR_US,
    MERCHANT_RETENTION_US,
    MERCHANT_WINDOWS,
    STATEFUL_FEATURES,
    WindowSpec,
)
from fraud_core.schema import MICROS_PER_SECOND, timestamps_us


class CardState(msgspec.Struct, array_like=True):
    """A card's transactions in the last CARD_RETENTION_US, sorted by time (parallel lists)."""

    ts: list[int] = msgspec.field(default_factory=list)
    amount: list[float] = msgspec.field(default_factory=list)
    merchant: list[str] = msgspec.field(default_factory=list)
    country: list[str] = msgspec.field(default_factory=list)


class MerchantState(msgspec.Struct, array_like=True):
    """A merchant's labels counted per hour of label time, hours sorted (parallel lists)."""

    hours: list[int] = msgspec.field(default_factory=list)
    labelled: list[int] = msgspec.field(default_factory=list)
    fraud: list[int] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CardEvent:
    """What the card windows need of a transaction."""

    ts_us: int
    amount: float
    merchant_id: str
    country: str


CardFeatures: TypeAlias = Callable[[CardState, CardEvent], list[float]]

_encoder = msgspec.msgpack.Encoder()
_card_decoder = msgspec.msgpack.Decoder(CardState)
_merchant_decoder = msgspec.msgpack.Decoder(MerchantState)


def encode_state(state: CardState | MerchantState) -> bytes:
    return _encoder.encode(state)


def decode_card_state(data: bytes | None) -> CardState:
    return CardState() if data is None else _card_decoder.decode(data)


def decode_merchant_state(data: bytes | None) -> MerchantState:
    return MerchantState() if data is None else _merchant_decoder.decode(data)


read_merchant_state = functools.lru_cache(maxsize=1024)(decode_merchant_state)
"""`decode_merchant_state` for readers, remembered for the last 1,024 encodings: a busy
merchant's state is read for many requests between two label updates, and a month of
labelled hours takes ~23 µs to decode. The state is shared: never change it."""


_CARD_WINDOW_LENGTHS = tuple(sorted({spec.window_us for spec in CARD_WINDOWS}))


def card_features_reference(state: CardState, event: CardEvent) -> list[float]:
    """The card window features of `event`, from the card's strictly earlier transactions:
    the specification `card_features` is generated to compute the same way."""
    end = bisect_left(state.ts, event.ts_us)
    # Each distinct window length is sliced and summed once, however many specs use it.
    windows = {}
    for length in _CARD_WINDOW_LENGTHS:
        start = bisect_left(state.ts, event.ts_us - length, 0, end)
        windows[length] = (start, end - start, sum(state.amount[start:end]))
    values = []
    for spec in CARD_WINDOWS:
        start, count, total = windows[spec.window_us]
        aggregate = spec.aggregate
        if count == 0:
            values.append(spec.default)
        elif aggregate == "count":
            values.append(float(count))
        elif aggregate == "amount_sum":
            values.append(float(total))
        elif aggregate == "amount_mean":
            values.append(total / count)
        elif aggregate == "seconds_since_prev":
            values.append((event.ts_us - state.ts[end - 1]) / MICROS_PER_SECOND)
        elif aggregate == "amount_to_mean":
            values.append(event.amount * count / total if total > 0 else spec.default)
        elif aggregate == "distinct_merchants":
            values.append(float(len(set(state.merchant[start:end]))))
        elif aggregate == "new_country":
            values.append(0.0 if event.country in state.country[start:end] else 1.0)
        else:
            raise ValueError(f"{spec.name}: {aggregate!r} is not a card aggregate")
    return values


_CARD_EXPRESSIONS = {
    # What `card_features_reference` computes per aggregate, for a window of {c} > 0 rows,
    # state[{s}:end], whose amounts sum to {a}.
    "count": "float({c})",
    "amount_sum": "float({a})",
    "amount_mean": "{a} / {c}",
    "seconds_since_prev": f"(t - ts[end - 1]) / {MICROS_PER_SECOND!r}",
    "amount_to_mean": "(event.amount * {c} / {a} if {a} > 0 else {default})",
    "distinct_merchants": "float(len(set(state.merchant[{s}:end])))",
    "new_country": "(0.0 if event.country in state.country[{s}:end] else 1.0)",
}


def compile_card_features(specs: Sequence[WindowSpec]) -> CardFeatures:
    """`card_features_reference` for `specs` as one straight-line function generated from
    them: each window length bisected and summed once, each spec one expression, with no
    loop, dictionary or dispatch on the aggregate's name per transaction (4.1 -> 2.5 µs for a
    card with 81 transactions). Same operations in the same order, so the same floats; a
    test holds the two equal on random histories."""
    lengths = sorted({spec.window_us for spec in specs})
    lines = [
        "def card_features(state, event):",
        "    ts, amount, t = state.ts, state.amount, event.ts_us",
        "    end = bisect_left(ts, t)",
    ]
    for i, length in enumerate(lengths):
        lines.append(
            f"    s{i} = bisect_left(ts, t - {length!r}, 0, end); c{i} = end - s{i}; "
            f"a{i} = sum(amount[s{i}:end])"
        )
    values = []
    for spec in specs:
        if spec.aggregate not in _CARD_EXPRESSIONS:
            raise ValueError(f"{spec.name}: {spec.aggregate!r} is not a card aggregate")
        i, default = lengths.index(spec.window_us), repr(float(spec.default))
        expression = _CARD_EXPRESSIONS[spec.aggregate].format(
            s=f"s{i}", c=f"c{i}", a=f"a{i}", default=default
        )
        values.append(f"({expression} if c{i} else {default})")
    lines.append(f"    return [{', '.join(values)}]")
    namespace: dict[str, object] = {"bisect_left": bisect_left}
    exec("\n".join(lines), namespace)
    return cast(CardFeatures, namespace["card_features"])


card_features = compile_card_features(CARD_WINDOWS)
"""The card window features of `event`, from the card's strictly earlier transactions (what
`card_features_reference` gives, faster)."""


def add_card_event(state: CardState, event: CardEvent) -> CardState:
    """The state after `event`, keeping only what the longest card window can still use."""
    i = bisect_right(state.ts, event.ts_us)
    state.ts.insert(i, event.ts_us)
    state.amount.insert(i, event.amount)
    state.merchant.insert(i, event.merchant_id)
    state.country.insert(i, event.country)
    cut = bisect_left(state.ts, state.ts[-1] - CARD_RETENTION_US)
    if cut:
        del state.ts[:cut], state.amount[:cut], state.merchant[:cut], state.country[:cut]
    return state


def card_step(state: CardState, event: CardEvent) -> tuple[list[float], CardState]:
    """Features of `event` from the state before it, and the state after it."""
    return card_features(state, event), add_card_event(state, event)


_MERCHANT_WINDOW_HOURS = tuple(sorted({spec.window_hours for spec in MERCHANT_WINDOWS}))


def merchant_features(state: MerchantState, ts_us: int) -> list[float]:
    """Label-delayed merchant risk at time `ts_us`, from labels known before its hour.

    The windows all end at that hour, so a longer one is the next shorter one plus the hours
    before it: each hour's counts are added once, not once per window (a merchant with a
    month of labelled hours: 15 -> 7 µs). The counts are integers, so the sums are the
    ones `merchant_features_reference` makes."""
    hour, hours = ts_us // HOUR_US, state.hours
    stop = bisect_left(hours, hour)
    labelled = fraud = 0
    sums = {}
    for window in _MERCHANT_WINDOW_HOURS:  # shortest first
        start = bisect_left(hours, hour - window, 0, stop)
        labelled += sum(state.labelled[start:stop])
        fraud += sum(state.fraud[start:stop])
        sums[window] = labelled, fraud
        stop = start
    values = []
    for spec in MERCHANT_WINDOWS:
        labelled, fraud = sums[spec.window_hours]
        if spec.aggregate == "label_count":
            values.append(float(labelled))
        elif labelled == 0:
            values.append(spec.default)
        else:
            values.append(fraud / labelled)
    return values


def merchant_features_reference(state: MerchantState, ts_us: int) -> list[float]:
    """`merchant_features` as the window specs say it, one window at a time."""
    hour = ts_us // HOUR_US
    end = bisect_left(state.hours, hour)
    values = []
    for spec in MERCHANT_WINDOWS:
        start = bisect_left(state.hours, hour - spec.window_hours, 0, end)
        labelled = sum(state.labelled[start:end])
        if spec.aggregate == "label_count":
            values.append(float(labelled))
        elif labelled == 0:
            values.append(spec.default)
        else:
            values.append(sum(state.fraud[start:end]) / labelled)
    return values


def add_label(state: MerchantState, label_time_us: int, is_fraud: bool) -> MerchantState:
    """The merchant state after one label became known at `label_time_us`."""
    hour = label_time_us // HOUR_US
    i = bisect_left(state.hours, hour)
    if i == len(state.hours) or state.hours[i] != hour:
        state.hours.insert(i, hour)
        state.labelled.insert(i, 0)
        state.fraud.insert(i, 0)
    state.labelled[i] += 1
    state.fraud[i] += int(is_fraud)
    cut = bisect_left(state.hours, state.hours[-1] - MERCHANT_RETENTION_US // HOUR_US)
    if cut:
        del state.hours[:cut], state.labelled[:cut], state.fraud[:cut]
    return state


LABEL_TIME_COLUMN = "label_time"
"""An optional column of labelled history: when its label became known (UTC timestamp). Rows
without one (or with a null) take their transaction time plus the label delay."""


def label_times_us(table: pa.Table, label_delay_us: int) -> np.ndarray:
    """When each row's label became known (microseconds): its `label_time` when the table has
    one, else its timestamp + `label_delay_us`."""
    known = timestamps_us(table.column("timestamp")) + label_delay_us
    if LABEL_TIME_COLUMN in table.column_names:
        column = table.column(LABEL_TIME_COLUMN)
        given = timestamps_us(pc.fill_null(column, pa.scalar(0, pa.timestamp("us", tz="UTC"))))
        known = np.where(np.asarray(column.is_valid()), given, known)
    return known


def _events(table: pa.Table, label_delay_us: int) -> Iterator[tuple[int, int, int]]:
    """(time, kind, row) in processing order: labels (kind 0) before transactions (kind 1).

    A row whose `is_fraud` is null is unlabelled: it is a transaction and no label."""
    ts = timestamps_us(table.column("timestamp"))
    order: list[tuple[int, int, int]] = [(int(t), 1, i) for i, t in enumerate(ts)]
    if "is_fraud" in table.column_names:
        labelled = np.flatnonzero(np.asarray(table.column("is_fraud").is_valid()))
        known = label_times_us(table, label_delay_us)
        order += [(int(known[i]), 0, int(i)) for i in labelled]
    order.sort()
    return iter(order)


def end_states(
    table: pa.Table,
    until_us: int | None = None,
    label_delay_us: int = DEFAULT_LABEL_DELAY_US,
) -> tuple[dict[str, CardState], dict[str, MerchantState]]:
    """Every card's and merchant's state after the events of `table` before `until_us`.

    The states `replay` leaves behind, without computing features: transactions with a
    timestamp before `until_us` and labels known before it (all of them when None). What a
    stream worker or the online store starts warm from, so that the first live transaction
    after `until_us` gets the features the batch path gives it.
    """
    cards: dict[str, CardState] = {}
    merchants: dict[str, MerchantState] = {}
    card_ids = table.column("card_id").to_pylist()
    merchant_ids = table.column("merchant_id").to_pylist()
    amounts = table.column("amount").to_pylist()
    countries = table.column("country").to_pylist()
    frauds = table.column("is_fraud").to_pylist() if "is_fraud" in table.column_names else None
    for t, kind, i in _events(table, label_delay_us):
        if until_us is not None and t >= until_us:
            break
        if kind == 0:
            assert frauds is not None
            merchant = merchants.setdefault(merchant_ids[i], MerchantState())
            add_label(merchant, t, bool(frauds[i]))
        else:
            event = CardEvent(t, amounts[i], merchant_ids[i], countries[i])
            add_card_event(cards.setdefault(card_ids[i], CardState()), event)
    return cards, merchants


def replay(
    table: pa.Table,
    card_states: dict[str, CardState] | None = None,
    merchant_states: dict[str, MerchantState] | None = None,
    label_delay_us: int = DEFAULT_LABEL_DELAY_US,
) -> dict[str, np.ndarray]:
    """Stateful features of every row of a transaction table, computed event by event.

    The ground truth for the batch path. Rows are processed in timestamp order (ties in row
    order). When the table has `is_fraud`, each labelled row's label becomes known at its
    `label_times_us` and feeds merchant risk (null labels are no labels). Returns one float64
    column per stateful feature, in row order. States may be passed in to continue from
    earlier history; they are updated in place.
    """
    cards = card_states if card_states is not None else {}
    merchants = merchant_states if merchant_states is not None else {}
    card_ids = table.column("card_id").to_pylist()
    merchant_ids = table.column("merchant_id").to_pylist()
    amounts = table.column("amount").to_pylist()
    countries = table.column("country").to_pylist()
    frauds = table.column("is_fraud").to_pylist() if "is_fraud" in table.column_names else None
    out = np.empty((table.num_rows, len(STATEFUL_FEATURES)), dtype=np.float64)
    n_card = len(CARD_WINDOWS)
    for t, kind, i in _events(table, label_delay_us):
        merchant = merchants.setdefault(merchant_ids[i], MerchantState())
        if kind == 0:
            assert frauds is not None
            add_label(merchant, t, bool(frauds[i]))
            continue
        event = CardEvent(t, amounts[i], merchant_ids[i], countries[i])
        card_values, _ = card_step(cards.setdefault(card_ids[i], CardState()), event)
        out[i, :n_card] = card_values
        out[i, n_card:] = merchant_features(merchant, t)
    return dict(zip(STATEFUL_FEATURES, out.T, strict=True))


def stateful_block(values: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-row lists of stateful feature values -> one (n, len(STATEFUL_FEATURES)) float64
    block, for feature_matrix."""
    return np.asarray(values, dtype=np.float64).reshape(len(values), len(STATEFUL_FEATURES))
