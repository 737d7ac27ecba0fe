"""Jobs, schedules and sensors: nightly scoring, weekly or label-driven retraining, rollback."""

import datetime as dt

import dagster as dg

from fraud_assets.defs.resources import (
    FeaturesResource,
    MlflowResource,
    PolicyResource,
    StorageResource,
)
from fraud_assets.lib.registry import roll_back
from fraud_training.splits import labelled_days

nightly_scoring_job = dg.define_asset_job(
    "nightly_scoring_job",
    selection=dg.AssetSelection.assets(
        "raw_transactions",
        "card_features",
        "scored_transactions",
        "fraud_alerts",
        "online_state",
    ),
    description="Ingest, featurize and score one day; load the online store if one is set.",
    # One process for the whole run, so its Spark steps share one session: a step process
    # each (Dagster's default) would start a JVM and Python workers for each Spark step.
    executor_def=dg.in_process_executor,
)

nightly_scoring_schedule = dg.build_schedule_from_partitioned_job(
    nightly_scoring_job, hour_of_day=2, minute_of_hour=0, name="nightly_scoring_schedule"
)
"""At 02:00 UTC, score yesterday (the newest complete day)."""

retraining_job = dg.define_asset_job(
    "retraining_job",
    selection=dg.AssetSelection.assets(
        "training_set", "fraud_model", "onnx_model", "quantized_onnx_model", "published_model"
    ),
    description="Train, export, quantize, validate and publish a new champion.",
)

weekly_retraining_schedule = dg.ScheduleDefinition(
    name="weekly_retraining_schedule",
    job=retraining_job,
    cron_schedule="0 4 * * 1",
    execution_timezone="UTC",
    description="Retrain every Monday at 04:00 UTC.",
)


@dg.sensor(job=retraining_job, minimum_interval_seconds=3600)
def new_labelled_days_sensor(
    context: dg.SensorEvaluationContext, policy: PolicyResource, features: FeaturesResource
) -> dg.SensorResult:
    """Retrain once enough days with known labels arrived since the last training set."""
    materialized = context.instance.get_materialized_partitions(dg.AssetKey("card_features"))
    days = sorted(dt.date.fromisoformat(d) for d in materialized)
    labelled = [d.isoformat() for d in labelled_days(days, features.label_delay_us)]
    newest_labelled = labelled[-1] if labelled else None
    event = context.instance.get_latest_materialization_event(dg.AssetKey("training_set"))
    trained_through = None
    if event is not None and event.asset_materialization is not None:
        value = event.asset_materialization.metadata.get("newest_day")
        trained_through = getattr(value, "value", None)
    new_days = [d for d in labelled if trained_through is None or d > trained_through]
    if newest_labelled is None or len(new_days) < policy.retrain_after_days:
        return dg.SensorResult(skip_reason=f"{len(new_days)} new labelled days")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"labelled-through-{newest_labelled}")]
    )


class RollbackConfig(dg.Config):
    registry_version: str
    """The MLflow registry version to make champion again."""


@dg.op
def point_champion_at(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    storage: StorageResource,
    mlflow_tracking: MlflowResource,
) -> None:
    champion = roll_back(
        mlflow_tracking.client(),
        mlflow_tracking.registered_model,
        config.registry_version,
        storage.model_store,
    )
    context.log.info(f"champion is now {champion}")


@dg.job(description="Point the champion alias and the local model store at an earlier version.")
def rollback_champion_job() -> None:
    point_champion_at()


defs = dg.Definitions(
    jobs=[nightly_scoring_job, retraining_job, rollback_champion_job],
    schedules=[nightly_scoring_schedule, weekly_retraining_schedule],
    sensors=[new_labelled_days_sensor],
)
