"""card_features: every stateful feature of a day's transactions, computed on Spark."""

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from fraud_assets.defs.partitions import look_back, partition_days, single_run
from fraud_assets.defs.resources import FeaturesResource, StorageResource
from fraud_assets.lib.batch import featurize_days
from fraud_assets.lib.warehouse import day_rows, existing_day_folders


def card_features(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    spark: LazyPySparkResource,
    features: FeaturesResource,
) -> dg.MaterializeResult:
    """Per-card windows and label-delayed merchant risk for each transaction of the day."""
    days = partition_days(context)
    raw = storage.table("raw_transactions")
    missing = [d for d in days if not existing_day_folders(raw, [d])]
    if missing:
        raise dg.Failure(description=f"raw_transactions missing for {missing}: materialize them")
    out = storage.table("card_features")
    written, history = featurize_days(spark.spark_session, raw, days, out, features.label_delay_us)
    rows = {d.isoformat(): day_rows(out, d) for d in written}
    return dg.MaterializeResult(
        metadata={
            "rows": sum(rows.values()), "rows_per_day": rows,
            "label_delay_days": features.label_delay_days, **history,
        }
    )  # fmt: skip


def build(daily: dg.PartitionsDefinition, label_delay_us: int) -> list[dg.AssetsDefinition]:
    """The feature assets on `daily` partitions."""
    return [
        dg.asset(
            partitions_def=daily,
            deps=[dg.AssetDep("raw_transactions", partition_mapping=look_back(label_delay_us))],
            backfill_policy=single_run,
            group_name="features",
            kinds={"spark", "parquet"},
        )(card_features),
    ]
