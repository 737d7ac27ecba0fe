"""The Spark batch steps, shared by the assets and bench/batch: featurize days, score days."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fraud_assets.lib.spark_features import stateful_features
from fraud_assets.lib.spark_scoring import SCORED_SCHEMA, score_partitions
from fraud_assets.lib.warehouse import (
    days_between,
    existing_day_folders,
    staging_folder,
    swap_in_days,
)
from fraud_core.bundle import ModelBundle
from fraud_core.features import CARD_LOOKBACK_DAYS, LABEL_LOOKBACK_DAYS
from fraud_core.schema import LABELLED_SCHEMA, to_micros

_SPARK_TYPES = {
    "string": "string",
    "double": "double",
    "bool": "boolean",
    "timestamp[us, tz=UTC]": "timestamp",
}
RAW_SCHEMA = ", ".join(f"{f.name} {_SPARK_TYPES[str(f.type)]}" for f in LABELLED_SCHEMA)


def day_start_us(day: dt.date) -> int:
    return to_micros(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))


def lookback_days(first: dt.date, end: dt.date, days_before: int) -> list[dt.date]:
    """The days [first, end) and the `days_before` days before them."""
    return days_between(first - dt.timedelta(days=days_before), end)


def featurize_days(
    session: SparkSession, raw: Path, days: list[dt.date], out: Path
) -> tuple[list[dt.date], dict[str, int]]:
    """Compute every stateful feature of `days` from raw history and replace those days in `out`.

    Reads the card look-back and the label look-back before the first day (what exists of
    them). Returns the days written and how many history days each side read.
    """
    first, end = days[0], days[-1] + dt.timedelta(days=1)
    card_days = existing_day_folders(raw, lookback_days(first, end, CARD_LOOKBACK_DAYS))
    label_days = existing_day_folders(raw, lookback_days(first, end, LABEL_LOOKBACK_DAYS))
    read = session.read.schema(RAW_SCHEMA).parquet
    history = read(*map(str, card_days))
    labels = read(*map(str, label_days)).where(F.col("is_fraud").isNotNull())
    features = stateful_features(history, labels, day_start_us(first), day_start_us(end))
    frame = features.withColumn("day", F.date_format("timestamp", "yyyy-MM-dd"))
    written = _write_by(frame, out, ["day"])
    return written, {"card_history_days": len(card_days), "label_history_days": len(label_days)}


def score_days(
    session: SparkSession, features: Path, days: list[dt.date], bundle: ModelBundle, out: Path
) -> list[dt.date]:
    """Score the featurized `days` with `bundle` and replace them in `out`, by day and hour."""
    folders = existing_day_folders(features, days)
    if len(folders) != len(days):
        raise FileNotFoundError(f"features missing for some of {days} under {features}")
    scored = (
        session.read.parquet(*map(str, folders))
        .withColumn("timestamp_us", F.unix_micros("timestamp"))
        .mapInArrow(score_partitions(bundle.onnx_bytes), SCORED_SCHEMA)
        .withColumn("day", F.date_format("timestamp", "yyyy-MM-dd"))
        .withColumn("hour", F.hour("timestamp"))
    )
    return _write_by(scored, out, ["day", "hour"])


def _write_by(frame: DataFrame, out: Path, columns: list[str]) -> list[dt.date]:
    """Write one file per partition value into staging, then swap each day into place."""
    staging = staging_folder(out)
    try:
        frame.repartition(*columns).write.partitionBy(*columns).parquet(str(staging / "out"))
        return swap_in_days(staging / "out", out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
