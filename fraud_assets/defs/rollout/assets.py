"""The rollout: decision logs in the warehouse, the daily verdict on champion, canary and
challenger, the jobs that move models between roles and the sensor that acts on verdicts.

- `decision_log`: the REST service's and the stream workers' decisions of a day, read from
  the decision topic (fraud_assets.lib.decisions).
- `batch_decisions`: the nightly path's decisions: every row of the day by the champion and,
  in shadow, by the challenger, with the feature vectors (Spark).
- `rollout_verdict`: fraud_assets.lib.verdict on both, with the labels known so far; its
  check fails when the canary alerts beyond its budget; recorded in MLflow.
- Jobs `publish_candidate_job`, `start_canary_job`, `end_canary_job`, `promote_canary_job`,
  `abort_canary_job` (fraud_assets.lib.rollout, as `fraudscale-models` does).
- `rollout_verdict_sensor`: aborts an over-budget canary (when `auto_abort`), promotes one
  whose labelled verdict is better (when `auto_promote`).
"""

import datetime as dt
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from dagster_pyspark import LazyPySparkResource

from fraud_assets.defs.partitions import partition_days, single_run
from fraud_assets.defs.resources import (
    FeaturesResource,
    MlflowResource,
    RolloutResource,
    StorageResource,
    champion_for_features,
    rollout_of,
)
from fraud_assets.lib.batch import session_settings, write_by
from fraud_assets.lib.decisions import DECISION_SCHEMA, batch_decisions, read_decision_day
from fraud_assets.lib.rollout import Rollout
from fraud_assets.lib.verdict import Verdict, judge
from fraud_assets.lib.warehouse import (
    existing_day_folders,
    read_days,
    write_day,
)
from fraud_core.bundle import BundleError, ModelBundle, read_bundle, validate_bundle
from fraud_core.rollout import CANARY, CHALLENGER, CHAMPION, SHADOW

BUDGET_CHECK = dg.AssetCheckSpec(
    "canary_alert_budget",
    asset="rollout_verdict",
    description="The canary's alert rate stays within its budget (a multiple of the champion's).",
)


def decision_log(
    context: dg.AssetExecutionContext, storage: StorageResource, rollout: RolloutResource
) -> dg.MaterializeResult:
    """The online paths' decisions on transactions of the day, from the decision topic."""
    if not rollout.decision_log_bootstrap:
        return dg.MaterializeResult(metadata={"read": False, "reason": "no decision log set"})
    counts: dict[str, int] = {}
    for day in partition_days(context):
        table = read_decision_day(rollout.decision_log_bootstrap, rollout.decision_log_topic, day)
        write_day(storage.table("decision_log"), day, table)
        grouped = table.group_by(["path", "role"]).aggregate([("decision_id", "count")])
        for row in grouped.to_pylist():
            key = f"{row['path']}/{row['role']}"
            counts[key] = counts.get(key, 0) + row["decision_id_count"]
    return dg.MaterializeResult(metadata={"read": True, "records_by_path_and_role": counts})


def batch_decisions_asset(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    spark: LazyPySparkResource,
    features: FeaturesResource,
) -> dg.MaterializeResult:
    """Each row of the day decided by the champion and, in shadow, by the challenger."""
    days = partition_days(context)
    bundles: dict[str, ModelBundle] = {CHAMPION: champion_for_features(storage, features)}
    challenger = _role_bundle(storage, CHALLENGER, features)
    if challenger is not None:
        bundles[SHADOW] = challenger
    folders = existing_day_folders(storage.table("card_features"), days)
    if len(folders) != len(days):
        raise dg.Failure(description=f"card_features missing for some of {days}")
    session = spark.spark_session
    frame = batch_decisions(session.read.parquet(*map(str, folders)), bundles)
    out = storage.table("batch_decisions")
    with session_settings(session, {"spark.sql.codegen.wholeStage": "false"}):
        written = write_by(frame, out, ["day"], cluster=False)
    return dg.MaterializeResult(
        metadata={
            "days": [d.isoformat() for d in written],
            "roles": {role: b.metadata.version for role, b in bundles.items()},
        }
    )


def _role_bundle(
    storage: StorageResource, role: str, features: FeaturesResource
) -> ModelBundle | None:
    version = getattr(storage.model_store.plan(), role)
    if not version:
        return None
    try:
        bundle = storage.model_store.load(version)
        validate_bundle(bundle, label_delay_us=features.label_delay_us)
    except BundleError as exc:
        raise dg.Failure(description=f"the {role} cannot score here: {exc}") from None
    return bundle


def rollout_verdict(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    features: FeaturesResource,
    rollout: RolloutResource,
    mlflow_tracking: MlflowResource,
) -> dg.MaterializeResult:
    """Champion, canary and challenger compared on the day's decisions, labels once known."""
    (day,) = partition_days(context)
    decisions = _day_decisions(storage, day)
    labels, known_until = _labels(storage, day)
    verdict = judge(
        day.isoformat(),
        decisions,
        labels,
        labels_known_until_us=known_until,
        label_delay_us=features.label_delay_us,
        budget=rollout.canary_alert_budget,
        min_decisions=rollout.canary_min_decisions,
    )
    _record(rollout_of(storage, mlflow_tracking), verdict)
    for note in verdict.notes:
        context.log.info(note)
    return dg.MaterializeResult(
        metadata=_metadata(verdict),
        check_results=[
            dg.AssetCheckResult(
                check_name="canary_alert_budget",
                passed=not verdict.canary_over_budget,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "canary": verdict.canary_version or "",
                    "budget": verdict.budget,
                    "over_budget": verdict.canary_over_budget,
                },
            )
        ],
    )


def _day_decisions(storage: StorageResource, day: dt.date) -> pa.Table:
    tables = []
    for name in ("decision_log", "batch_decisions"):
        try:
            tables.append(read_days(storage.table(name), [day]).select(DECISION_SCHEMA.names))
        except FileNotFoundError:
            continue
    if not tables:
        return DECISION_SCHEMA.empty_table()
    return pa.concat_tables([t.cast(DECISION_SCHEMA) for t in tables])


def _labels(storage: StorageResource, day: dt.date) -> tuple[pa.Table, int]:
    """The day's labels and the time up to which the warehouse's history runs (labels are
    known `label delay` after their transactions within it)."""
    raw = storage.table("raw_transactions")
    labels = read_days(raw, [day], columns=["transaction_id", "is_fraud"])
    days = sorted(p.name.split("=", 1)[1] for p in raw.glob("day=*"))
    newest = read_days(raw, [dt.date.fromisoformat(days[-1])], columns=["timestamp"])
    until = pc.max(newest.column("timestamp").cast(pa.int64())).as_py()
    return labels, int(until or 0)


def _metadata(verdict: Verdict) -> dict[str, Any]:
    by_role = {
        f"{s.paths}/{s.role}": {
            "model_version": s.model_version,
            "decisions": s.decisions,
            "alert_rate": round(s.alert_rate, 6),
            "precision": s.precision,
            "recall": s.recall,
        }
        for s in verdict.stats
    }
    return {
        "verdict": dg.MetadataValue.md(verdict.markdown()),
        "by_role": dg.MetadataValue.json(by_role),
        "canary_version": verdict.canary_version or "",
        "canary_over_budget": verdict.canary_over_budget,
        "canary_better": "unknown" if verdict.canary_better is None else verdict.canary_better,
        "labels_complete": verdict.labels_complete,
        "labels_complete_at": dt.datetime.fromtimestamp(
            verdict.labels_complete_at_us / 1e6, dt.UTC
        ).isoformat(),
    }


def _record(rollout: Rollout, verdict: Verdict) -> None:
    """The verdict as an MLflow run of the rollout experiment: metrics by role, the table."""
    client = rollout.client
    assert client is not None
    run_id = rollout.start_run(
        f"verdict {verdict.day}",
        {"day": verdict.day, "canary_version": verdict.canary_version or ""},
    )
    for s in verdict.stats:
        prefix = f"{s.paths}.{s.role}"
        client.log_metric(run_id, f"{prefix}.alert_rate", s.alert_rate)
        client.log_metric(run_id, f"{prefix}.decisions", s.decisions)
        for name in ("precision", "recall", "psi_vs_champion", "agreement_with_champion"):
            value = getattr(s, name)
            if value is not None:
                client.log_metric(run_id, f"{prefix}.{name}", value)
    client.log_metric(run_id, "canary_over_budget", float(verdict.canary_over_budget))
    client.log_text(run_id, verdict.markdown(), "verdict.md")
    client.set_terminated(run_id)


def build(daily: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The rollout assets on `daily` partitions."""
    return [
        dg.asset(
            partitions_def=daily,
            backfill_policy=single_run,
            group_name="rollout",
            kinds={"kafka", "parquet"},
        )(decision_log),
        dg.asset(
            name="batch_decisions",
            partitions_def=daily,
            deps=["card_features", "published_model"],
            backfill_policy=single_run,
            group_name="rollout",
            kinds={"spark", "onnx", "parquet"},
        )(batch_decisions_asset),
        dg.asset(
            partitions_def=daily,
            deps=["decision_log", "batch_decisions", "raw_transactions"],
            check_specs=[BUDGET_CHECK],
            group_name="rollout",
            kinds={"mlflow"},
        )(rollout_verdict),
    ]


# Jobs: each moves models between roles (fraud_assets.lib.rollout), recorded in MLflow.


class PublishConfig(dg.Config):
    bundle_path: str
    """A fraudscale bundle file (.onnx), e.g. a candidate of the training assets."""
    role: str = CHALLENGER
    """"challenger" (shadow on every path) or "canary"."""
    share: float = 0.0
    """A canary's share of cards."""
    reason: str = ""


class CanaryConfig(dg.Config):
    version: str
    """A bundle version in the model store."""
    share: float = 0.05
    reason: str = ""


class RoleConfig(dg.Config):
    role: str = CANARY
    reason: str = ""


@dg.op
def publish_candidate(
    context: dg.OpExecutionContext,
    config: PublishConfig,
    storage: StorageResource,
    mlflow_tracking: MlflowResource,
) -> None:
    version = rollout_of(storage, mlflow_tracking).publish(
        read_bundle(config.bundle_path), config.role, share=config.share, reason=config.reason
    )
    context.log.info(f"{version} is now {config.role}")


@dg.op
def start_canary(
    context: dg.OpExecutionContext,
    config: CanaryConfig,
    storage: StorageResource,
    mlflow_tracking: MlflowResource,
) -> None:
    rollout_of(storage, mlflow_tracking).start_canary(config.version, config.share, config.reason)
    context.log.info(f"canary {config.version} answers {config.share:.1%} of cards")


def _role_op(name: str, step: str, done: str) -> dg.OpDefinition:
    """An op that takes a role through one rollout step (end, abort, promote)."""

    @dg.op(name=name)
    def move(
        context: dg.OpExecutionContext,
        config: RoleConfig,
        storage: StorageResource,
        mlflow_tracking: MlflowResource,
    ) -> None:
        rollout = rollout_of(storage, mlflow_tracking)
        version = getattr(rollout, step)(config.role, reason=config.reason)
        context.log.info(f"{config.role} {version} {done}: {config.reason}")

    return move


end_role = _role_op("end_role", "end", "ended")
abort_role = _role_op("abort_role", "abort", "aborted")
promote_role = _role_op("promote_role", "promote", "promoted to champion")


@dg.job(description="Publish a candidate bundle as challenger (shadow) or canary.")
def publish_candidate_job() -> None:
    publish_candidate()


@dg.job(description="Give a stored model version a share of cards as canary.")
def start_canary_job() -> None:
    start_canary()


@dg.job(description="End the canary (or challenger): the champion answers every card.")
def end_canary_job() -> None:
    end_role()


@dg.job(description="Abort the canary (or challenger), recording why.")
def abort_canary_job() -> None:
    abort_role()


@dg.job(description="Make the canary (or challenger) champion.")
def promote_canary_job() -> None:
    promote_role()


@dg.sensor(
    jobs=[abort_canary_job, promote_canary_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def rollout_verdict_sensor(
    context: dg.SensorEvaluationContext, rollout: RolloutResource, storage: StorageResource
) -> dg.SensorResult:
    """Act on the newest verdict: abort a canary over its alert budget (auto_abort), promote
    one whose labelled verdict is better (auto_promote). Once per verdict and canary."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("rollout_verdict"))
    if event is None or event.asset_materialization is None:
        return dg.SensorResult(skip_reason="no verdict yet")
    meta = {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}
    canary = meta.get("canary_version") or ""
    live = storage.model_store.plan().canary
    if not canary or canary != live:
        return dg.SensorResult(skip_reason=f"the verdict's canary {canary!r} is not live")
    partition = event.asset_materialization.partition or ""
    if meta.get("canary_over_budget") and rollout.auto_abort:
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"abort-{canary}-{partition}-{event.timestamp}",
                    job_name="abort_canary_job",
                    run_config=_role_run("abort_role", f"over its alert budget on {partition}"),
                )
            ]
        )
    if meta.get("canary_better") is True and rollout.auto_promote:
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"promote-{canary}-{partition}-{event.timestamp}",
                    job_name="promote_canary_job",
                    run_config=_role_run("promote_role", f"labelled verdict of {partition}"),
                )
            ]
        )
    return dg.SensorResult(skip_reason=f"verdict on {partition}: nothing to do")


def _role_run(op: str, reason: str) -> dict[str, Any]:
    return {"ops": {op: {"config": {"role": CANARY, "reason": reason}}}}


jobs = [
    publish_candidate_job,
    start_canary_job,
    end_canary_job,
    abort_canary_job,
    promote_canary_job,
]
sensors = [rollout_verdict_sensor]
