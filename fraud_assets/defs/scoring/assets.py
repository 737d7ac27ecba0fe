"""scored_transactions and fraud_alerts: the nightly batch scoring on Spark."""

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster_pyspark import LazyPySparkResource

from fraud_assets.defs.partitions import partition_days, single_run
from fraud_assets.defs.publishing.assets import baseline_path
from fraud_assets.defs.resources import (
    FeaturesResource,
    MonitoringResource,
    StorageResource,
    champion_for_features,
)
from fraud_assets.lib.batch import score_days
from fraud_assets.lib.drift import PSI_ALERT, load_baseline, psi
from fraud_assets.lib.monitoring import psi_figures, push
from fraud_assets.lib.warehouse import (
    read_days,
    write_day,
)

DRIFT_CHECK = dg.AssetCheckSpec("score_drift", asset="scored_transactions")


def scored_transactions(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    spark: LazyPySparkResource,
    features: FeaturesResource,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    """Every transaction of the day scored by the published model (Parquet by day and hour)."""
    days = partition_days(context)
    bundle = champion_for_features(storage, features)
    table = storage.table("scored_transactions")
    try:
        written = score_days(
            spark.spark_session, storage.table("card_features"), days, bundle, table
        )
    except FileNotFoundError as exc:
        raise dg.Failure(description=str(exc)) from None
    per_day = {d: read_days(table, [d], columns=["score", "is_alert"]) for d in written}
    scores = pa.concat_tables(per_day.values())
    baseline = load_baseline(baseline_path(storage, bundle.metadata.version))
    drift = {
        d.isoformat(): psi(baseline, day.column("score").to_numpy())
        for d, day in per_day.items()
        if baseline
    }
    worst = max(drift.values(), default=0.0)
    if drift:  # the newest day's: the alert follows the last night
        newest = drift[max(drift)]
        push(monitoring.pushgateway_url, "scored_transactions",
             psi_figures(bundle.metadata.version, newest))  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "rows": scores.num_rows,
            "alerts": int(pc.sum(scores.column("is_alert")).as_py() or 0),
            "mean_score": float(np.mean(scores.column("score").to_numpy())),
            "model_version": bundle.metadata.version,
            "psi_by_day": drift,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="score_drift",
                passed=bool(baseline) and worst <= PSI_ALERT,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"max_psi": worst, "limit": PSI_ALERT, "has_baseline": bool(baseline)},
            )
        ],
    )


def fraud_alerts(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    """Transactions of the day scored at or above the model's threshold, with top reasons."""
    scored_rows = 0
    every_alert = []
    for day in partition_days(context):
        scored = read_days(storage.table("scored_transactions"), [day])
        alerts = scored.filter(pc.field("is_alert")).sort_by([("score", "descending")])
        write_day(storage.table("fraud_alerts"), day, alerts)
        scored_rows += scored.num_rows
        every_alert.append(alerts)
    alerts = pa.concat_tables(every_alert)
    labelled = alerts.filter(pc.is_valid(pc.field("is_fraud")))
    confirmed = int(pc.sum(labelled.column("is_fraud")).as_py() or 0)
    reasons = (
        pc.value_counts(
            pc.list_flatten(pc.split_pattern(alerts.column("reasons"), ","))
        ).to_pylist()
        if alerts.num_rows
        else []
    )
    return dg.MaterializeResult(
        metadata={
            "alerts": alerts.num_rows,
            "alert_rate": alerts.num_rows / max(scored_rows, 1),
            "confirmed_fraud_share": confirmed / max(labelled.num_rows, 1),
            "top_reasons": {
                r["values"]: r["counts"] for r in sorted(reasons, key=lambda r: -r["counts"])[:5]
            },
        }
    )


def build(daily: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The scoring assets on `daily` partitions."""
    return [
        dg.asset(
            partitions_def=daily,
            deps=["card_features", "published_model"],
            backfill_policy=single_run,
            check_specs=[DRIFT_CHECK],
            group_name="scoring",
            kinds={"spark", "onnx", "parquet"},
        )(scored_transactions),
        dg.asset(
            partitions_def=daily,
            deps=["scored_transactions"],
            backfill_policy=single_run,
            group_name="scoring",
            kinds={"parquet"},
        )(fraud_alerts),
    ]
