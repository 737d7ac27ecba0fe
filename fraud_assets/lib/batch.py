"""The Spark batch steps, shared by the assets and bench/batch: featurize days, score days."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fraud_assets.lib.spark_features import stateful_features, with_ts_us
from fraud_assets.lib.spark_scoring import scored
from fraud_assets.lib.warehouse import (
    days_between,
    existing_day_folders,
    staging_folder,
    swap_in_days,
)
from fraud_core.bundle import ModelBundle
from fraud_core.schema import LABELLED_SCHEMA, from_micros, to_micros

_SPARK_TYPES = {
    "string": "string",
    "double": "double",
    "bool": "boolean",
    "timestamp[us, tz=UTC]": "timestamp",
}
RAW_SCHEMA = ", ".join(f"{f.name} {_SPARK_TYPES[str(f.type)]}" for f in LABELLED_SCHEMA)


_ROW_IDS = ("transaction_id", "card_id")
"""Columns with nearly one value a row: Parquet's dictionary encoding of them is pure cost (the
writer hashes every value until the dictionary overflows, then falls back to plain)."""


def day_start_us(day: dt.date) -> int:
    return to_micros(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))


def lookback_days(first: dt.date, end: dt.date, days_before: int) -> list[dt.date]:
    """The days [first, end) and the `days_before` days before them."""
    return days_between(first - dt.timedelta(days=days_before), end)


class DayHistory:
    """Raw transactions by timestamp interval, read from the day folders that hold it.

    A `History` for `stateful_features`: each interval reads only the days it overlaps (days
    that do not exist contribute nothing), and `folders_read` collects the day folders read.
    """

    def __init__(self, session: SparkSession, raw: Path) -> None:
        self._session, self._raw = session, raw
        self.folders_read: set[Path] = set()

    def __call__(self, lo_us: int, hi_us: int) -> DataFrame:
        last = from_micros(hi_us - 1).date()
        overlapped = days_between(from_micros(lo_us).date(), last + dt.timedelta(days=1))
        folders = existing_day_folders(self._raw, overlapped)
        self.folders_read.update(folders)
        frame = (
            self._session.read.schema(RAW_SCHEMA).parquet(*map(str, folders))
            if folders
            else self._session.createDataFrame([], RAW_SCHEMA)
        )
        # On the timestamp column itself, so Parquet skips row groups outside the interval.
        ts = F.col("timestamp")
        inside = (ts >= F.timestamp_micros(F.lit(lo_us))) & (ts < F.timestamp_micros(F.lit(hi_us)))
        return with_ts_us(frame.where(inside))


def featurize_days(
    session: SparkSession, raw: Path, days: list[dt.date], out: Path, label_delay_us: int
) -> tuple[list[dt.date], dict[str, int]]:
    """Compute every stateful feature of `days` from raw history and replace those days in `out`.

    Reads what exists of the card and label look-back before the first day (labels known
    `label_delay_us` after their transactions). Returns the days written and how many days of
    raw history were read.
    """
    first, end = days[0], days[-1] + dt.timedelta(days=1)
    history = DayHistory(session, raw)
    features = stateful_features(history, day_start_us(first), day_start_us(end), label_delay_us)
    frame = features.withColumn("day", F.date_format("timestamp", "yyyy-MM-dd"))
    # Each window task writes its own file per day: gathering a day into one task first made
    # one core write the whole day while the other idled (~7 s of 60 at 1.2M rows a day).
    written = write_by(frame, out, ["day"], cluster=False)
    return written, {"history_days_read": len(history.folders_read)}


def score_days(
    session: SparkSession, features: Path, days: list[dt.date], bundle: ModelBundle, out: Path
) -> list[dt.date]:
    """Score the featurized `days` with `bundle` and replace them in `out`, by day and hour."""
    folders = existing_day_folders(features, days)
    if len(folders) != len(days):
        raise FileNotFoundError(f"features missing for some of {days} under {features}")
    frame = (
        scored(session.read.parquet(*map(str, folders)), bundle)
        .withColumn("day", F.date_format("timestamp", "yyyy-MM-dd"))
        .withColumn("hour", F.hour("timestamp"))
    )
    # Every row goes through Python, so fusing the few JVM operators around the UDF into
    # generated code gains nothing, and each new driver JVM would compile that code afresh.
    with session_settings(session, {"spark.sql.codegen.wholeStage": "false"}):
        return write_by(frame, out, ["day", "hour"], cluster=True)


@contextmanager
def session_settings(session: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """SQL settings of `session` for the queries run inside the block, restored after it."""
    before = {key: session.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        session.conf.set(key, value)
    try:
        yield
    finally:
        for key, previous in before.items():
            if previous is None:
                session.conf.unset(key)
            else:
                session.conf.set(key, previous)


def write_by(frame: DataFrame, out: Path, columns: list[str], *, cluster: bool) -> list[dt.date]:
    """Write `frame` partitioned by `columns` into staging, then swap each day into place.

    `cluster` gathers each partition value into one task first, so it gets one file (24 per
    day rather than 24 per task); otherwise every task writes a file per value it holds.
    """
    staging = staging_folder(out)
    try:
        clustered = frame.repartition(*columns) if cluster else frame
        plain = {f"parquet.enable.dictionary#{c}": "false" for c in _ROW_IDS if c in frame.columns}
        clustered.write.options(**plain).partitionBy(*columns).parquet(str(staging / "out"))
        return swap_in_days(staging / "out", out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
