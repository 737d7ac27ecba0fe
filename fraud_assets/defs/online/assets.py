"""online_state: card and merchant states for the REST service, loaded into its Redis nightly.

For deployments without stream workers (which keep these states current as events arrive):
the state as of the end of the day replaces what Redis holds for those cards and merchants.
With stream workers running, leave FRAUD_ASSETS_ONLINE_REDIS_URL unset: a nightly load would
put back states older than theirs. Spark computes the states and its executors write them
(fraud_assets.lib.spark_online_state), so the load scales with the cluster.
"""

import datetime as dt

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from fraud_assets.defs.partitions import look_back, partition_days, single_run
from fraud_assets.defs.resources import (
    FeaturesResource,
    OnlineStoreResource,
    StorageResource,
    champion_for_features,
)
from fraud_assets.lib.batch import DayHistory, day_start_us, lookback_days
from fraud_assets.lib.spark_online_state import write_end_states
from fraud_assets.lib.warehouse import existing_day_folders
from fraud_core.features import label_lookback_days


def online_state(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    spark: LazyPySparkResource,
    online_store: OnlineStoreResource,
    features: FeaturesResource,
) -> dg.MaterializeResult:
    """Every card's and merchant's state at the end of the day, written to the online store."""
    if not online_store.redis_url:
        return dg.MaterializeResult(
            metadata={"loaded": False, "reason": "no online store configured"}
        )
    day = partition_days(context)[-1]  # the newest day's state is the one that counts
    raw = storage.table("raw_transactions")
    if not existing_day_folders(raw, [day]):
        raise dg.Failure(description=f"raw_transactions missing for {day}: materialize it")
    champion_for_features(storage, features)  # REST scores these states with it
    delay = features.label_delay_us
    end = day + dt.timedelta(days=1)
    days = lookback_days(day, end, label_lookback_days(delay))
    history = DayHistory(spark.spark_session, raw)  # the days that exist
    cards, merchants = write_end_states(
        history(day_start_us(days[0]), day_start_us(end)), delay, online_store.redis_url
    )
    return dg.MaterializeResult(
        metadata={
            "loaded": True, "cards": cards, "merchants": merchants,
            "history_days": len(history.folders_read),
        }
    )  # fmt: skip


def build(daily: dg.PartitionsDefinition, label_delay_us: int) -> list[dg.AssetsDefinition]:
    """The online-store asset on `daily` partitions."""
    return [
        dg.asset(
            partitions_def=daily,
            deps=[dg.AssetDep("raw_transactions", partition_mapping=look_back(label_delay_us))],
            backfill_policy=single_run,  # a range of days is one run, which loads the newest
            group_name="serving",
            kinds={"spark", "redis"},
        )(online_state),
    ]
