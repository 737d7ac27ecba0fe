"""The feature contract: names, order, dtype and version of every model input.

Two kinds of feature:

* stateless ones, computed from the transaction alone by `stateless_features`, one vectorised
  function that batch (a Spark Arrow UDF), REST and stream all call;
* stateful ones, declared once as `WindowSpec`s. Spark evaluates them with window functions;
  the stream and REST paths evaluate them with the incremental reference implementation in
  `fraud_core.state`. Both follow the semantics written on `WindowSpec`.

`feature_matrix` assembles the model input (float32, in `FEATURE_NAMES` order) from the raw
transaction columns plus one column per stateful feature.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeAlias

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraud_core.schema import MICROS_PER_SECOND, timestamps_us

HOUR_US = 3600 * MICROS_PER_SECOND
DAY_US = 24 * HOUR_US

CATEGORICAL_COLUMNS = ("merchant_category", "channel", "currency", "country")
"""The open-string columns encoded as codes: 0 for "unknown", a known value's rank + 1."""

DEFAULT_LABEL_DELAY_US = 3 * DAY_US
"""The label delay of a contract that does not say otherwise."""


class DataContract(msgspec.Struct, frozen=True, kw_only=True):
    """The data-dependent part of the features, carried in the model bundle.

    `FEATURE_VERSION` is the definition of the features; this is what a model learnt from its
    training data, which every path must apply the same way to score with it:

    * `vocabularies`: per categorical column, its values by descending frequency on the
      training days (capped; ties by value). A value's code is its rank + 1, anything else 0
      ("unknown").
    * `label_delay_us`: in history without label events, a label is taken to be known this
      long after its transaction. Training features, batch features, the stream's warm start
      and the online store's nightly load derive label times from history with it; live label
      events carry their own.
    """

    vocabularies: dict[str, tuple[str, ...]]
    label_delay_us: int = DEFAULT_LABEL_DELAY_US


def empty_contract(label_delay_us: int = DEFAULT_LABEL_DELAY_US) -> DataContract:
    """A contract that knows no categorical value (every code "unknown")."""
    return DataContract(
        vocabularies=dict.fromkeys(CATEGORICAL_COLUMNS, ()), label_delay_us=label_delay_us
    )


STATELESS_FEATURES = (
    "log_amount",
    "hour_of_day",
    "day_of_week",
    "is_weekend",
    "is_night",
    "is_round_amount",
    "merchant_category_code",
    "channel_code",
    "currency_code",
    "country_code",
)

Entity = Literal["card", "merchant"]
Aggregate = Literal[
    "count",
    "amount_sum",
    "amount_mean",
    "distinct_merchants",
    "seconds_since_prev",
    "amount_to_mean",
    "new_country",
    "fraud_rate",
    "label_count",
]


@dataclass(frozen=True)
class WindowSpec:
    """One stateful feature: an aggregate over an entity's recent history.

    Card windows cover the card's transactions with timestamp in [t - window, t), where t is
    the current transaction's timestamp in microseconds: strictly earlier transactions only,
    so two transactions of a card at the same instant do not see each other.

    Merchant windows count labels, bucketed by the hour of their `label_time`: buckets h with
    hour(t) - window <= h < hour(t). A label therefore counts only from the hour after it
    became known. In labelled history without label events, a label is known `label_delay`
    after its transaction (chargebacks arrive late, and features must not see them earlier).

    `default` is the value when the window holds nothing to aggregate.
    """

    name: str
    entity: Entity
    aggregate: Aggregate
    window_us: int
    default: float

    @property
    def window_hours(self) -> int:
        return self.window_us // HOUR_US


def _card_windows() -> tuple[WindowSpec, ...]:
    specs = []
    for label, window in (("1h", HOUR_US), ("24h", DAY_US), ("7d", 7 * DAY_US)):
        specs += [
            WindowSpec(f"card_txn_count_{label}", "card", "count", window, 0.0),
            WindowSpec(f"card_amount_sum_{label}", "card", "amount_sum", window, 0.0),
            WindowSpec(f"card_amount_mean_{label}", "card", "amount_mean", window, 0.0),
        ]
    return (
        *specs,
        WindowSpec("card_seconds_since_prev", "card", "seconds_since_prev", 7 * DAY_US, -1.0),
        WindowSpec("card_amount_to_mean_7d", "card", "amount_to_mean", 7 * DAY_US, -1.0),
        WindowSpec("card_distinct_merchants_24h", "card", "distinct_merchants", DAY_US, 0.0),
        WindowSpec("card_new_country_7d", "card", "new_country", 7 * DAY_US, 0.0),
        # A month of spending: a card's usual amounts, before a fraud run can contaminate a
        # week of them (backtests on outside data: docs/benchmarks.md, model quality).
        WindowSpec("card_txn_count_30d", "card", "count", 30 * DAY_US, 0.0),
        WindowSpec("card_amount_mean_30d", "card", "amount_mean", 30 * DAY_US, 0.0),
        WindowSpec("card_amount_to_mean_30d", "card", "amount_to_mean", 30 * DAY_US, -1.0),
    )


CARD_WINDOWS = _card_windows()
MERCHANT_WINDOWS = (
    WindowSpec("merchant_fraud_rate_1d", "merchant", "fraud_rate", DAY_US, -1.0),
    WindowSpec("merchant_fraud_rate_7d", "merchant", "fraud_rate", 7 * DAY_US, -1.0),
    WindowSpec("merchant_fraud_rate_30d", "merchant", "fraud_rate", 30 * DAY_US, -1.0),
    WindowSpec("merchant_label_count_30d", "merchant", "label_count", 30 * DAY_US, 0.0),
)
WINDOW_SPECS = CARD_WINDOWS + MERCHANT_WINDOWS

CARD_RETENTION_US = max(s.window_us for s in CARD_WINDOWS)
MERCHANT_RETENTION_US = max(s.window_us for s in MERCHANT_WINDOWS) + 7 * DAY_US

CARD_LOOKBACK_DAYS = -(-CARD_RETENTION_US // DAY_US)
"""Whole days of transactions before a day that its card windows can reach."""


def label_lookback_days(label_delay_us: int) -> int:
    """Whole days before a day whose labels can be known, and counted by merchant windows, in
    it, when labels are known `label_delay_us` after their transactions."""
    return -(-(max(s.window_us for s in MERCHANT_WINDOWS) + label_delay_us) // DAY_US)


STATEFUL_FEATURES = tuple(s.name for s in WINDOW_SPECS)
FEATURE_NAMES = STATELESS_FEATURES + STATEFUL_FEATURES
"""Every model input, in the order of the model's input tensor."""

N_FEATURES = len(FEATURE_NAMES)

MODEL_INPUT_COLUMNS = ("amount", "timestamp_us", *CATEGORICAL_COLUMNS, *STATEFUL_FEATURES)
"""The columns `feature_matrix` reads: raw ones for the stateless features, then the stateful."""


def _version() -> str:
    definition = {
        "stateless": STATELESS_FEATURES,
        "categorical": CATEGORICAL_COLUMNS,
        "windows": [asdict(s) for s in WINDOW_SPECS],
    }
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    return f"2.{digest[:12]}"


FEATURE_VERSION = _version()
"""Changes whenever a definition above changes; a model trained on other features is refused.
The data-dependent part (vocabularies, label delay) is the bundle's `DataContract`."""

Column: TypeAlias = np.ndarray | pa.Array | pa.ChunkedArray | Sequence[Any]


@functools.cache
def _codes(vocabulary: tuple[str, ...]) -> tuple[pa.Array, dict[str, float]]:
    return pa.array(vocabulary, pa.string()), {v: i + 1.0 for i, v in enumerate(vocabulary)}


def category_codes(values: Column, vocabulary: Sequence[str]) -> np.ndarray:
    """Vocabulary index + 1 for each value; 0 for a value outside the vocabulary.

    Arrow columns (batch) are looked up with Arrow's hash kernel; Python values (a REST
    request, a stream batch) with a dict, far cheaper than building Arrow arrays for a few
    hundred values.
    """
    value_set, lookup = _codes(tuple(vocabulary))
    if isinstance(values, pa.Array | pa.ChunkedArray):
        index = pc.index_in(values, value_set=value_set)
        return np.asarray(pc.fill_null(index, -1), dtype=np.float32) + np.float32(1.0)
    if isinstance(values, np.ndarray):
        values = values.tolist()
    get = lookup.get
    return np.fromiter((get(v, 0.0) for v in values), dtype=np.float32, count=len(values))


def stateless_features(columns: Mapping[str, Column], contract: DataContract) -> np.ndarray:
    """Features of each transaction on its own: float32 array (n, len(STATELESS_FEATURES)).

    `columns` holds at least `amount` (float), `timestamp_us` (int64 microseconds UTC) and the
    categorical columns as strings: numpy arrays, Arrow arrays or sequences. Categorical codes
    follow the contract's vocabularies.
    """
    amount = np.asarray(columns["amount"], dtype=np.float64)
    ts = np.asarray(columns["timestamp_us"], dtype=np.int64)
    hour = (ts // HOUR_US) % 24
    day_of_week = (ts // DAY_US + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0.
    out = np.empty((amount.shape[0], len(STATELESS_FEATURES)), dtype=np.float32)
    out[:, 0] = np.log1p(amount)
    out[:, 1] = hour
    out[:, 2] = day_of_week
    out[:, 3] = day_of_week >= 5
    out[:, 4] = hour < 6
    out[:, 5] = np.equal(np.mod(amount, 1.0), 0.0)
    for i, name in enumerate(CATEGORICAL_COLUMNS, start=6):
        out[:, i] = category_codes(columns[name], contract.vocabularies.get(name, ()))
    return out


def unknown_share(values: pa.Array | pa.ChunkedArray, vocabulary: Sequence[str]) -> float:
    """The share of `values` a model with `vocabulary` encodes as unknown."""
    if len(values) == 0:
        return 0.0
    known = pc.is_in(values, value_set=pa.array(list(vocabulary), pa.string()))
    return 1.0 - float(pc.mean(pc.fill_null(known, False).cast(pa.float64())).as_py() or 0.0)


def feature_matrix(
    columns: Mapping[str, Column], contract: DataContract, stateful: np.ndarray | None = None
) -> np.ndarray:
    """The model input, float32 (n, N_FEATURES) in FEATURE_NAMES order.

    Stateless features are computed here; each stateful feature is read from the column of
    its name (computed by Spark window functions or by the reference implementation), or,
    with `stateful`, from that (n, len(STATEFUL_FEATURES)) block in STATEFUL_FEATURES order
    (the reference implementation's rows: one copy instead of one per column, a quarter of
    the matrix's cost at REST's 16-row batches).
    """
    stateless = stateless_features(columns, contract)
    out = np.empty((stateless.shape[0], N_FEATURES), dtype=np.float32)
    out[:, : len(STATELESS_FEATURES)] = stateless
    if stateful is not None:
        out[:, len(STATELESS_FEATURES) :] = stateful
        return out
    for i, name in enumerate(STATEFUL_FEATURES, start=len(STATELESS_FEATURES)):
        out[:, i] = np.asarray(columns[name], dtype=np.float64)
    return out


def arrow_columns(table: pa.Table) -> dict[str, Column]:
    """A table's columns by name plus `timestamp_us`, as feature_matrix takes them."""
    columns: dict[str, Column] = {name: table.column(name) for name in table.column_names}
    columns["timestamp_us"] = timestamps_us(table.column("timestamp"))
    return columns


def warm_up() -> None:
    """Pay the one-time costs of the feature code (pyarrow imports pandas lazily on its first
    array, ~3 s on a small machine) at start-up rather than in the first request or batch."""
    category_codes(pa.array(["?"]), ("!",))
