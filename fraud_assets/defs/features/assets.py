"""card_features: every stateful feature of a day's transactions, computed on Spark."""

import datetime as dt
import shutil

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import functions as F

from fraud_assets.defs.partitions import (
    CARD_LOOKBACK_DAYS,
    LABEL_LOOKBACK_DAYS,
    daily,
    look_back,
    partition_days,
    single_run,
)
from fraud_assets.defs.resources import StorageResource
from fraud_assets.lib.spark_features import stateful_features
from fraud_assets.lib.warehouse import (
    day_rows,
    days_between,
    existing_day_folders,
    staging_folder,
    swap_in_days,
)
from fraud_core.schema import LABELLED_SCHEMA, to_micros


def day_start_us(day: dt.date) -> int:
    return to_micros(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))


@dg.asset(
    partitions_def=daily,
    deps=[dg.AssetDep("raw_transactions", partition_mapping=look_back)],
    backfill_policy=single_run,
    group_name="features",
    kinds={"spark", "parquet"},
)
def card_features(
    context: dg.AssetExecutionContext, storage: StorageResource, spark: LazyPySparkResource
) -> dg.MaterializeResult:
    """Per-card windows and label-delayed merchant risk for each transaction of the day."""
    days = partition_days(context)
    first, end = days[0], days[-1] + dt.timedelta(days=1)
    raw = storage.table("raw_transactions")
    card_days = existing_day_folders(
        raw, days_between(first - dt.timedelta(CARD_LOOKBACK_DAYS), end)
    )
    label_days = existing_day_folders(
        raw, days_between(first - dt.timedelta(LABEL_LOOKBACK_DAYS), end)
    )
    missing = [d for d in days if not existing_day_folders(raw, [d])]
    if missing:
        raise dg.Failure(
            description=f"raw_transactions missing for {missing}: materialize them first"
        )
    session = spark.spark_session
    read = session.read.schema(_spark_schema()).parquet
    history = read(*map(str, card_days))
    labels = read(*map(str, label_days)).where(F.col("is_fraud").isNotNull())
    features = stateful_features(history, labels, day_start_us(first), day_start_us(end))
    out = features.withColumn("day", F.date_format("timestamp", "yyyy-MM-dd"))
    staging = staging_folder(storage.table("card_features"))
    try:
        out.repartition("day").write.partitionBy("day").parquet(str(staging / "out"))
        written = swap_in_days(staging / "out", storage.table("card_features"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rows = {d.isoformat(): day_rows(storage.table("card_features"), d) for d in written}
    return dg.MaterializeResult(
        metadata={
            "rows": sum(rows.values()),
            "rows_per_day": rows,
            "card_history_days": len(card_days),
            "label_history_days": len(label_days),
        }
    )


def _spark_schema() -> str:
    types = {
        "string": "string",
        "double": "double",
        "bool": "boolean",
        "timestamp[us, tz=UTC]": "timestamp",
    }
    return ", ".join(f"{f.name} {types[str(f.type)]}" for f in LABELLED_SCHEMA)
