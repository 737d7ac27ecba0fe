"""The rollout verdict on scripted histories, through a real Dagster instance and MLflow store:
a canary with a doubled alert rate fails its check and the sensor aborts it; a better one is
promoted once its labels have arrived, not before."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from fraud_assets.defs.partitions import daily_partitions
from fraud_assets.defs.resources import (
    FeaturesResource,
    MlflowResource,
    RolloutResource,
    StorageResource,
)
from fraud_assets.defs.rollout import assets as rollout_defs
from fraud_assets.lib.decisions import DECISION_SCHEMA
from fraud_assets.lib.verdict import judge, wilson
from fraud_assets.lib.warehouse import read_days, write_day
from fraud_core.features import DEFAULT_LABEL_DELAY_US
from fraud_core.model_store import ModelStore
from fraud_core.rollout import (
    CANARY,
    CHAMPION,
    DecisionRecord,
    RolloutPlan,
    decision_id,
    decision_messages,
    in_canary,
)
from fraud_devtools.stream_workers import produce
from tests.conftest import relabelled

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 1, 10)
SHARE = 0.3


def test_wilson_interval_matches_the_hand_computed_one() -> None:
    low, high = wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson(0, 0) == (0.0, 1.0)


def scripted_day(
    canary_alerts_fraud: float, canary_false_alert: float
) -> tuple[pa.Table, pa.Table]:
    """4,000 cards, one transaction each; 5 % fraud. The champion alerts on half the frauds
    and 1 % of the rest (an alert rate of 3.45 %); the canary (30 % of cards) as given: at
    (0.5, 0.05) its expected alert rate is 7.25 %, 2.1x the champion's (the budget is 1.5x)."""
    rng = np.random.default_rng(7)
    start = int(dt.datetime(2026, 1, 10, tzinfo=dt.UTC).timestamp() * 1e6)
    rows, labels = [], []
    for i in range(4000):
        card, tid = f"c{i}", f"t{i}"
        fraud = rng.random() < 0.05
        role = CANARY if in_canary(card, SHARE) else CHAMPION
        hit, false = (0.5, 0.01) if role == CHAMPION else (canary_alerts_fraud, canary_false_alert)
        alert = rng.random() < (hit if fraud else false)
        event = start + i * 20_000_000
        rows.append({
            "decision_id": decision_id(tid, "2" if role == CANARY else "1", role),
            "transaction_id": tid, "card_id": card, "path": "stream", "role": role,
            "model_name": "m", "model_version": "2" if role == CANARY else "1",
            "feature_version": "f", "features": [0.5, float(i)], "score": 0.9 if alert else 0.1,
            "threshold": 0.5, "decision": "alert" if alert else "allow",
            "event_time_us": event, "decision_time_us": event + 3_000, "degraded": False,
        })  # fmt: skip
        labels.append({"transaction_id": tid, "is_fraud": fraud,
                       "timestamp": dt.datetime.fromtimestamp(event / 1e6, dt.UTC)})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=DECISION_SCHEMA), pa.Table.from_pylist(labels)


def test_the_verdict_flags_a_canary_over_budget_and_waits_for_labels_to_promote() -> None:
    noisy, labels = scripted_day(0.5, 0.05)
    end_of_day = int(dt.datetime(2026, 1, 11, tzinfo=dt.UTC).timestamp() * 1e6)
    early = judge("d", noisy, labels, labels_known_until_us=end_of_day,
                  label_delay_us=DEFAULT_LABEL_DELAY_US)  # fmt: skip
    assert early.canary_over_budget
    assert early.canary_better is None
    assert not early.labels_complete
    champion = early.role("online", CHAMPION)
    assert champion is not None
    assert champion.labelled == 0  # labels not due yet
    good, labels = scripted_day(0.8, 0.005)
    later = end_of_day + DEFAULT_LABEL_DELAY_US
    verdict = judge("d", good, labels, labels_known_until_us=later,
                    label_delay_us=DEFAULT_LABEL_DELAY_US)  # fmt: skip
    assert not verdict.canary_over_budget
    assert verdict.labels_complete
    assert verdict.canary_better is True
    canary = verdict.role("online", CANARY)
    assert canary is not None
    assert canary.recall is not None
    assert canary.recall_ci is not None
    assert 0.6 < canary.recall_ci[0] < canary.recall < canary.recall_ci[1]
    assert "| online | canary | 2 |" in verdict.markdown()


def resources(root: Path, models: Path, **rollout: Any) -> dict[str, Any]:
    return {
        "storage": StorageResource(
            landing_dir=str(root / "landing"), warehouse_dir=str(root / "warehouse"),
            model_store_dir=str(models),
        ),
        "mlflow_tracking": MlflowResource(local_dir=str(root / "mlflow")),
        "features": FeaturesResource(),
        "rollout": RolloutResource(canary_min_decisions=100, **rollout),
    }  # fmt: skip


def verdict_then_sensor(
    instance: dg.DagsterInstance, root: Path, models: ModelStore, decisions: pa.Table,
    labels: pa.Table, labels_until: dt.date, **rollout: Any,
) -> tuple[dict[str, Any], Any]:  # fmt: skip
    """Materialize the day's verdict on scripted decisions and labels (the warehouse's history
    running to `labels_until`), then evaluate the rollout sensor."""
    res = resources(root, models.root, **rollout)
    warehouse = root / "warehouse"
    write_day(warehouse / "decision_log", DAY, decisions)
    write_day(warehouse / "raw_transactions", DAY, labels)
    late = labels.slice(0, 1).set_column(
        2, "timestamp", pa.array([dt.datetime.combine(labels_until, dt.time(), dt.UTC)])
    )
    write_day(warehouse / "raw_transactions", labels_until, late)
    (verdict_asset,) = [
        a for a in rollout_defs.build(daily_partitions("2026-01-05"))
        if a.key == dg.AssetKey("rollout_verdict")
    ]  # fmt: skip
    result = dg.materialize(
        [verdict_asset], partition_key=DAY.isoformat(), resources=res, instance=instance,
        raise_on_error=False,
    )  # fmt: skip
    context = dg.build_sensor_context(instance=instance, resources=res)
    return res, (result, rollout_defs.rollout_verdict_sensor(context))


def run_requested(
    request: dg.RunRequest, job_name: str, res: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    """Run the job the sensor asked for, as the daemon would."""
    assert request.job_name == job_name
    job = next(j for j in rollout_defs.jobs if j.name == job_name)
    assert job.execute_in_process(
        run_config=request.run_config, resources=res, instance=instance
    ).success


@pytest.fixture
def with_canary(tmp_path: Path, trained, second_model) -> ModelStore:  # type: ignore[no-untyped-def]
    store = ModelStore(tmp_path / "models")
    store.publish(trained.bundle)
    store.add(second_model.bundle)
    store.point_to("2", CANARY, share=SHARE)
    return store


def test_a_canary_with_a_doubled_alert_rate_fails_its_check_and_is_aborted(
    tmp_path: Path, with_canary: ModelStore, instance: dg.DagsterInstance
) -> None:
    decisions, labels = scripted_day(0.5, 0.05)
    res, (result, sensed) = verdict_then_sensor(
        instance, tmp_path, with_canary, decisions, labels, DAY + dt.timedelta(days=1)
    )
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    (request,) = sensed.run_requests
    run_requested(request, "abort_canary_job", res, instance)
    assert with_canary.plan() == RolloutPlan(champion="1")
    client = res["mlflow_tracking"].client()
    runs = client.search_runs(
        [client.get_experiment_by_name("fraudscale-rollout").experiment_id],
        "params.action = 'abort'",
    )
    assert "alert budget" in runs[0].data.params["reason"]


def test_a_better_canary_is_promoted_once_its_labels_arrived(
    tmp_path: Path, with_canary: ModelStore, instance: dg.DagsterInstance
) -> None:
    decisions, labels = scripted_day(0.8, 0.005)
    _, (result, sensed) = verdict_then_sensor(
        instance, tmp_path / "early", with_canary, decisions, labels, DAY + dt.timedelta(days=1),
        auto_promote=True,
    )  # fmt: skip
    assert result.success
    assert not sensed.run_requests  # labels not in: nothing to do yet
    res, (result, sensed) = verdict_then_sensor(
        instance,
        tmp_path,
        with_canary,
        decisions,
        labels,
        DAY + dt.timedelta(days=5),
        auto_promote=True,
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    (request,) = sensed.run_requests
    run_requested(request, "promote_canary_job", res, instance)
    assert with_canary.plan() == RolloutPlan(champion="2")
    client = res["mlflow_tracking"].client()
    assert (
        client.get_model_version_by_alias("fraudscale-fraud", "champion").tags["bundle_version"]
        == "2"
    )


def pairs(table: pa.Table) -> list[tuple[str, str]]:
    return list(
        zip(table.column("decision_id").to_pylist(), table.column("path").to_pylist(), strict=True)
    )


def test_the_decision_log_asset_reads_a_days_decisions_from_the_topic_once(
    tmp_path: Path, kafka: str, instance: dg.DagsterInstance, with_canary: ModelStore
) -> None:
    topic = f"ingest-{tmp_path.name}.decisions"
    decisions, _ = scripted_day(0.5, 0.01)
    day = decisions.slice(0, 50)
    rest = day.slice(0, 10).set_column(3, "path", pa.array(["rest"] * 10))
    before = decisions.slice(50, 5).set_column(
        12, "event_time_us", pa.array([v - 86_400_000_000 for v in range(5)], pa.int64())
    )
    # A retry logs a decision twice; REST and stream log one transaction each.
    sent = pa.concat_tables([day, day.slice(0, 5), rest, before])
    records = list(
        decision_messages(
            DecisionRecord(**{**row, "features": np.asarray(row["features"], "<f4").tobytes()})
            for row in sent.to_pylist()
        )
    )
    asyncio.run(produce(kafka, topic, records))
    res = resources(tmp_path, with_canary.root, decision_log_bootstrap=kafka,
                    decision_log_topic=topic)  # fmt: skip
    (asset,) = [
        a for a in rollout_defs.build(daily_partitions("2026-01-05"))
        if a.key == dg.AssetKey("decision_log")
    ]  # fmt: skip
    tables = []
    for _ in range(2):  # a rerun replaces the day with the same rows
        result = dg.materialize(
            [asset], partition_key=DAY.isoformat(), resources=res, instance=instance
        )
        assert result.success
        tables.append(read_days(tmp_path / "warehouse" / "decision_log", [DAY]))
    got = tables[0]
    assert got.num_rows == 60  # 50 stream + 10 REST, each once; the day before left out
    want = pa.concat_tables([day, rest])
    assert sorted(pairs(got)) == sorted(pairs(want))
    vectors = dict(zip(pairs(want), want.column("features").to_pylist(), strict=True))
    assert [vectors[p] for p in pairs(got)] == got.column("features").to_pylist()
    assert tables[1].sort_by("decision_id").equals(got.sort_by("decision_id"))


def test_fraudscale_models_moves_a_candidate_through_its_roles_and_records_each_step(
    tmp_path: Path, trained, second_model, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    from fraud_assets import cli
    from fraud_core.bundle import write_bundle

    monkeypatch.setenv("FRAUD_ASSETS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri sets it
    store = ModelStore(tmp_path / "models")
    store.publish(trained.bundle)
    candidate = write_bundle(second_model.bundle, tmp_path / "candidate.onnx")
    assert cli.main(["publish", str(candidate), "--role", "challenger"]) == 0
    assert store.plan() == RolloutPlan(champion="1", challenger="2")
    assert cli.main(["canary", "2", "--share", "0.2", "--reason", "seen in shadow"]) == 0
    assert store.plan() == RolloutPlan(champion="1", canary="2", canary_share=0.2, challenger="2")
    assert cli.main(["end", "--role", "challenger"]) == 0
    assert cli.main(["promote"]) == 0
    assert store.plan() == RolloutPlan(champion="2")
    client = MlflowResource(local_dir=str(tmp_path / "mlflow")).client()
    experiment = client.get_experiment_by_name("fraudscale-rollout").experiment_id
    actions = [r.data.params.get("action") for r in client.search_runs([experiment])]
    assert {"publish", "start_canary", "end", "promote"} <= set(actions)
    assert (
        client.get_model_version_by_alias("fraudscale-fraud", "champion").tags["bundle_version"]
        == "2"
    )
    other = write_bundle(relabelled(second_model.bundle, 2 * DEFAULT_LABEL_DELAY_US),
                         tmp_path / "other.onnx")  # fmt: skip
    assert cli.main(["publish", str(other), "--role", "canary", "--share", "0.1"]) == 2
    assert "label delay of 6 days" in " ".join(capsys.readouterr().out.split())
    assert cli.main(["promote"]) == 2  # no canary left to promote
    assert store.plan() == RolloutPlan(champion="2")
