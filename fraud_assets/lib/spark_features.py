"""The stateful window specs of fraud_core, evaluated by Spark window functions.

Nothing here defines a feature: each expression is derived from a `WindowSpec` and follows
the semantics written there (card frames are `[t - w, t)` on microsecond timestamps, merchant
frames are hour buckets `[hour(t) - w, hour(t))` of label time). Tests hold the results to
the reference implementation in `fraud_core.state`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.window import WindowSpec as WindowSpec_

from fraud_core.features import (
    CARD_WINDOWS,
    HOUR_US,
    LABEL_DELAY_US,
    MERCHANT_WINDOWS,
    STATEFUL_FEATURES,
    WindowSpec,
)
from fraud_core.schema import MICROS_PER_SECOND


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
        f"_count_{window_us}": F.count(F.lit(1)).over(frame),
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


def with_ts_us(df: DataFrame) -> DataFrame:
    return df.withColumn("ts_us", F.unix_micros("timestamp"))


def card_window_features(history: DataFrame) -> DataFrame:
    """`history` (transactions with ts_us) plus one column per card window spec."""
    base: dict[str, Column] = {}
    for window_us in sorted({spec.window_us for spec in CARD_WINDOWS}):
        base |= _base_columns(window_us)
    staged = history.select("*", *(column.alias(name) for name, column in base.items()))
    return staged.select(
        *history.columns, *(_card_expression(spec).alias(spec.name) for spec in CARD_WINDOWS)
    )


def hourly_labels(labelled: DataFrame) -> DataFrame:
    """(merchant_id, hour, labelled, fraud): labels counted per hour in which they became known.

    Labelled history has no label events, so a label is known LABEL_DELAY_US after its
    transaction, as in `fraud_core.state.replay`.
    """
    hour = F.floor((F.col("ts_us") + LABEL_DELAY_US) / HOUR_US).cast("long")
    return labelled.groupBy("merchant_id", hour.alias("hour")).agg(
        F.count(F.lit(1)).alias("labelled"), F.sum(F.col("is_fraud").cast("long")).alias("fraud")
    )


def merchant_risk_features(targets: DataFrame, labels: DataFrame) -> DataFrame:
    """`targets` plus one column per merchant window spec, from `hourly_labels` rows.

    Each distinct (merchant, hour) of the targets becomes a query row in the merchant's
    hour-ordered label rows, so one range frame per spec sums the buckets before that hour.
    """
    target_hour = F.floor(F.col("ts_us") / HOUR_US).cast("long")
    queries = targets.select("merchant_id", target_hour.alias("hour")).distinct()
    rows = queries.select(
        "merchant_id", "hour", F.lit(0).cast("long").alias("labelled"),
        F.lit(0).cast("long").alias("fraud"), F.lit(True).alias("is_query"),
    ).unionByName(labels.withColumn("is_query", F.lit(False)))  # fmt: skip
    columns = []
    for spec in MERCHANT_WINDOWS:
        frame = (
            Window.partitionBy("merchant_id").orderBy("hour").rangeBetween(-spec.window_hours, -1)
        )
        labelled = F.coalesce(F.sum("labelled").over(frame), F.lit(0))
        fraud = F.coalesce(F.sum("fraud").over(frame), F.lit(0))
        if spec.aggregate == "label_count":
            value = labelled.cast("double")
        elif spec.aggregate == "fraud_rate":
            value = F.when(labelled > 0, fraud / labelled).otherwise(F.lit(spec.default))
        else:
            raise ValueError(f"{spec.name}: {spec.aggregate!r} is not a merchant aggregate")
        columns.append(value.cast("double").alias(spec.name))
    risk = (
        rows.select("merchant_id", "hour", "is_query", *columns).where("is_query").drop("is_query")
    )
    # One risk row per merchant and hour of the targets: small, so it is broadcast and the
    # target rows are not shuffled for the join.
    return (
        targets.withColumn("hour", target_hour)
        .join(F.broadcast(risk), ["merchant_id", "hour"], "left")
        .drop("hour")
    )


def stateful_features(
    card_history: DataFrame, label_history: DataFrame, start_us: int, end_us: int
) -> DataFrame:
    """Every stateful feature for the transactions with ts in [start_us, end_us).

    `card_history` must reach back the longest card window before `start_us`, and
    `label_history` (labelled transactions) the longest merchant window plus the label delay.
    """
    cards = card_window_features(with_ts_us(card_history))
    targets = cards.where((F.col("ts_us") >= start_us) & (F.col("ts_us") < end_us))
    labels = hourly_labels(with_ts_us(label_history))
    features = merchant_risk_features(targets, labels)
    missing = [name for name in STATEFUL_FEATURES if name not in features.columns]
    if missing:
        raise RuntimeError(f"Spark path lacks features {missing}")
    return features
