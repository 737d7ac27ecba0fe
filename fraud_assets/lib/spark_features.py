"""The stateful window specs of fraud_core, evaluated by Spark window functions.

Nothing here defines a feature: each expression is derived from a `WindowSpec` and follows
the semantics written there (card frames are `[t - w, t)` on microsecond timestamps, merchant
frames are hour buckets `[hour(t) - w, hour(t))` of label time). Tests hold the results to
the reference implementation in `fraud_core.state`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeAlias

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.window import WindowSpec as WindowSpec_

from fraud_core.features import (
    CARD_WINDOWS,
    HOUR_US,
    MERCHANT_WINDOWS,
    STATEFUL_FEATURES,
    WindowSpec,
)
from fraud_core.schema import MICROS_PER_SECOND

_ROWS = "_rows"
"""How many transactions a history row stands for: 1, or a summary row's group size."""


def _frame(window_us: int) -> WindowSpec_:
    return Window.partitionBy("card_id").orderBy("ts_us").rangeBetween(-window_us, -1)


# Each frame's aggregates are computed once and shared by every spec over that frame: Spark
# recomputes a sliding aggregate for each row, so duplicates cost real time.
_NEEDS = {
    "seconds_since_prev": ("last_ts", lambda: F.max("ts_us")),
    "distinct_merchants": ("merchants", lambda: F.collect_set("merchant_id")),
    "new_country": ("countries", lambda: F.collect_set("country")),
}


def _base_columns(window_us: int) -> dict[str, Column]:
    frame = _frame(window_us)
    columns = {
        f"_count_{window_us}": F.sum(_ROWS).over(frame),
        f"_sum_{window_us}": F.sum("amount").over(frame),
    }
    for spec in CARD_WINDOWS:
        if spec.window_us == window_us and spec.aggregate in _NEEDS:
            name, aggregate = _NEEDS[spec.aggregate]
            columns[f"_{name}_{window_us}"] = aggregate().over(frame)
    return columns


def _card_expression(spec: WindowSpec) -> Column:
    w = spec.window_us
    count, total = F.col(f"_count_{w}"), F.col(f"_sum_{w}")
    match spec.aggregate:
        case "count":
            value = count.cast("double")
        case "amount_sum":
            value = total
        case "amount_mean":
            value = total / count
        case "seconds_since_prev":
            value = (F.col("ts_us") - F.col(f"_last_ts_{w}")) / MICROS_PER_SECOND
        case "amount_to_mean":
            value = F.when(total > 0, F.col("amount") * count / total)
        case "distinct_merchants":
            value = F.size(F.col(f"_merchants_{w}")).cast("double")
        case "new_country":
            seen = F.array_contains(F.col(f"_countries_{w}"), F.col("country"))
            value = F.when(seen, 0.0).otherwise(1.0)
        case _:
            raise ValueError(f"{spec.name}: {spec.aggregate!r} is not a card aggregate")
    return F.when(count > 0, value).otherwise(F.lit(spec.default)).cast("double")


History: TypeAlias = Callable[[int, int], DataFrame]
"""Raw transactions (with `is_fraud` and `ts_us`) whose ts_us is in [lo, hi): the caller maps an
interval to the files that hold it, so each part of the computation reads only its own days."""


def with_ts_us(df: DataFrame) -> DataFrame:
    return df.withColumn("ts_us", F.unix_micros("timestamp"))


_SUMMARISABLE = {
    "count", "amount_sum", "amount_mean", "seconds_since_prev", "amount_to_mean", "new_country"
}  # fmt: skip
"""Aggregates that a (card, country) summary row answers exactly: counts and sums add up, the
latest timestamp is the group's, and the set of countries is the set of groups."""

_CARD_WINDOW_US = sorted({spec.window_us for spec in CARD_WINDOWS})


def summary_intervals(start_us: int, end_us: int) -> list[tuple[int, int]]:
    """The [lo, hi) intervals of history, oldest first, that can be collapsed to summary rows
    for targets with ts in [start_us, end_us).

    With the card windows' lengths L1 < ... < Lk, the history in [end - Lj, start - Lj-1) lies
    whole in every target's frames of length Lj and longer and in no shorter frame (a frame
    of t holds ts in [t - w, t)), so one summary row per (card, country) stands for it in
    each of those frames: its ts, the group's latest, falls in the interval too. A length
    has its interval only when every spec over it or a longer frame is `_SUMMARISABLE`.
    Between two intervals lies a day (a target day's width) that only some targets' frames
    of that length reach: it stays rows.
    """
    intervals = []
    for j in range(len(_CARD_WINDOW_US) - 1, -1, -1):
        length = _CARD_WINDOW_US[j]
        if any(s.aggregate not in _SUMMARISABLE for s in CARD_WINDOWS if s.window_us >= length):
            break
        shorter = _CARD_WINDOW_US[j - 1] if j > 0 else 0
        lo, hi = end_us - length, start_us - shorter
        if lo < hi:
            intervals.append((lo, hi))
    return intervals


def _rows(history: DataFrame) -> DataFrame:
    return history.withColumn(_ROWS, F.lit(1).cast("long"))


_FRAME_INPUTS = ("card_id", "ts_us", "amount", "merchant_id", "country", _ROWS)
"""The columns card frames aggregate: all that earlier transactions need to carry."""


def card_history(history: History, start_us: int, end_us: int) -> DataFrame:
    """What the card frames of targets in [start_us, end_us) read: the targets with every
    column, and the longest window before start_us with only `_FRAME_INPUTS`, where each of
    `summary_intervals` is collapsed to one row per (card, country).

    A summary row carries its group's row count, amount sum and latest ts_us (other columns
    null), so the frames aggregate the same values from far fewer rows: for one target day
    with windows of 1 h, 24 h, 7 and 30 days, 4 days of transactions (the target day and the
    three days that only some targets' 24 h, 7 d and 30 d frames reach) are sorted with the
    summaries of the other 27, instead of 31 days of transactions.
    """

    def raw(lo: int, hi: int) -> DataFrame:
        return _rows(history(lo, hi)).select(*_FRAME_INPUTS)

    earlier: list[DataFrame] = []
    cursor = start_us - _CARD_WINDOW_US[-1]
    for lo, hi in summary_intervals(start_us, end_us):
        if cursor < lo:
            earlier.append(raw(cursor, lo))
        earlier.append(
            history(lo, hi)
            .groupBy("card_id", "country")
            .agg(
                F.count(F.lit(1)).alias(_ROWS),
                F.sum("amount").alias("amount"),
                F.max("ts_us").alias("ts_us"),
            )
        )
        cursor = hi
    if cursor < start_us:
        earlier.append(raw(cursor, start_us))
    rows = _rows(history(start_us, end_us))
    return functools.reduce(
        lambda union, part: union.unionByName(part, allowMissingColumns=True), earlier, rows
    )


def card_window_features(history: History, start_us: int, end_us: int) -> DataFrame:
    """The transactions in [start_us, end_us), plus one column per card window spec."""
    base: dict[str, Column] = {}
    for window_us in _CARD_WINDOW_US:
        base |= _base_columns(window_us)
    rows = card_history(history, start_us, end_us)
    staged = rows.select("*", *(column.alias(name) for name, column in base.items()))
    targets = staged.where((F.col("ts_us") >= start_us) & (F.col("ts_us") < end_us))
    return targets.select(
        *(c for c in rows.columns if c != _ROWS),
        *(_card_expression(spec).alias(spec.name) for spec in CARD_WINDOWS),
    )


def label_interval(start_us: int, end_us: int, label_delay_us: int) -> tuple[int, int]:
    """[lo, hi): the transactions whose labels the merchant frames of targets in
    [start_us, end_us) can count (a label is known `label_delay_us` after its transaction)."""
    start_hour = start_us // HOUR_US
    longest = max(spec.window_hours for spec in MERCHANT_WINDOWS)
    return (start_hour - longest) * HOUR_US - label_delay_us, end_us - label_delay_us


def hourly_labels(labelled: DataFrame, label_delay_us: int) -> DataFrame:
    """(merchant_id, hour, labelled, fraud): labels counted per hour in which they became known.

    Labelled history has no label events, so a label is known `label_delay_us` after its
    transaction, as in `fraud_core.state.replay`; a null label is no label.
    """
    hour = F.floor((F.col("ts_us") + label_delay_us) / HOUR_US).cast("long")
    return (
        labelled.where(F.col("is_fraud").isNotNull())
        .groupBy("merchant_id", hour.alias("hour"))
        .agg(
            F.count(F.lit(1)).alias("labelled"),
            F.sum(F.col("is_fraud").cast("long")).alias("fraud"),
        )
    )


def _hour(ts_us: Column) -> Column:
    return F.floor(ts_us / HOUR_US).cast("long")


def merchant_risk(transactions: DataFrame, labels: DataFrame) -> DataFrame:
    """(merchant_id, hour, one column per merchant window spec) for each merchant and hour of
    `transactions`, from `hourly_labels` rows.

    Each distinct (merchant, hour) becomes a query row in the merchant's hour-ordered label
    rows. A frame's sum over hours [q - w, q) is the running sum before q minus the running
    sum before q - w: running sums are growing frames, which Spark keeps incrementally, where
    a sliding frame would re-add up to w hourly buckets for every row.
    """
    queries = transactions.select("merchant_id", _hour(F.col("ts_us")).alias("hour")).distinct()
    rows = queries.select(
        "merchant_id", "hour", F.lit(0).cast("long").alias("labelled"),
        F.lit(0).cast("long").alias("fraud"), F.lit(True).alias("is_query"),
    ).unionByName(labels.withColumn("is_query", F.lit(False)))  # fmt: skip
    by_hour = Window.partitionBy("merchant_id").orderBy("hour")

    def before(column: str, hours: int) -> Column:
        """Sum of `column` over the hours before `hour - hours`."""
        frame = by_hour.rangeBetween(Window.unboundedPreceding, -hours - 1)
        return F.coalesce(F.sum(column).over(frame), F.lit(0))

    columns = []
    for spec in MERCHANT_WINDOWS:
        w = spec.window_hours
        labelled = before("labelled", 0) - before("labelled", w)
        fraud = before("fraud", 0) - before("fraud", w)
        if spec.aggregate == "label_count":
            value = labelled.cast("double")
        elif spec.aggregate == "fraud_rate":
            value = F.when(labelled > 0, fraud / labelled).otherwise(F.lit(spec.default))
        else:
            raise ValueError(f"{spec.name}: {spec.aggregate!r} is not a merchant aggregate")
        columns.append(value.cast("double").alias(spec.name))
    return (
        rows.select("merchant_id", "hour", "is_query", *columns).where("is_query").drop("is_query")
    )


def stateful_features(
    history: History, start_us: int, end_us: int, label_delay_us: int
) -> DataFrame:
    """Every stateful feature for the transactions with ts in [start_us, end_us), labels known
    `label_delay_us` after their transactions."""
    targets = card_window_features(history, start_us, end_us)
    labels = history(*label_interval(start_us, end_us, label_delay_us))
    risk = merchant_risk(history(start_us, end_us), hourly_labels(labels, label_delay_us))
    # One risk row per merchant and hour of the targets: small, so it is broadcast and the
    # target rows are not shuffled for the join.
    features = (
        targets.withColumn("hour", _hour(F.col("ts_us")))
        .join(F.broadcast(risk), ["merchant_id", "hour"], "left")
        .drop("hour", "ts_us")
    )
    missing = [name for name in STATEFUL_FEATURES if name not in features.columns]
    if missing:
        raise RuntimeError(f"Spark path lacks features {missing}")
    # Frames aggregate in double; the contract's dtype, which the model reads, is float32.
    return features.withColumns({name: F.col(name).cast("float") for name in STATEFUL_FEATURES})
