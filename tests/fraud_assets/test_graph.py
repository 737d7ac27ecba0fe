"""The whole asset graph on a real Spark session, Dagster instance and MLflow store."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from litestar.testing import TestClient
from mlflow import MlflowClient

from fraud_assets.defs.resources import RolloutResource
from fraud_assets.lib.jvm import aot_cache_path, installed_jdks
from fraud_assets.lib.registry import CHAMPION_ALIAS, roll_back
from fraud_assets.lib.spark_aot import record
from fraud_assets.lib.warehouse import read_days
from fraud_assets.settings import AssetSettings
from fraud_core.bundle import as_version
from fraud_core.features import DAY_US, DEFAULT_LABEL_DELAY_US, HOUR_US, STATEFUL_FEATURES
from fraud_core.online_store import write_states
from fraud_core.rollout import CHALLENGER, CHAMPION, SHADOW, bucket, decision_id
from fraud_core.schema import timestamps_us
from fraud_core.state import end_states, replay
from fraud_devtools.processes import wait_until
from fraud_devtools.redis_server import LocalRedis
from serving.app import create_app
from serving.services import scoring as scoring_service
from serving.settings import ServingSettings
from tests.conftest import with_unknown_labels
from tests.fraud_assets.conftest import DAYS, make_resources, run_range, run_unpartitioned
from tests.serving.test_online_state import wire

pytestmark = pytest.mark.integration

TRAINING = ["training_set", "fraud_model", "onnx_model", "quantized_onnx_model", "published_model"]
SCORED_DAYS = DAYS[-3:]


@pytest.fixture(scope="module")
def platform(tmp_path_factory, landing, instance, spark_resource) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Ingest and featurize every day (one single-run backfill), train and publish, score."""
    root = tmp_path_factory.mktemp("platform")
    resources = make_resources(root, landing, spark_resource)
    run_range(instance, resources, ["raw_transactions", "card_features"], DAYS[0], DAYS[-1])
    training = run_unpartitioned(instance, resources, TRAINING)
    run_range(
        instance,
        resources,
        ["scored_transactions", "fraud_alerts"],
        SCORED_DAYS[0],
        SCORED_DAYS[-1],
    )
    return {"root": root, "resources": resources, "training": training}


def materialization_metadata(result: Any, node: str) -> dict[str, Any]:
    (event,) = result.asset_materializations_for_node(node)
    return {key: value.value for key, value in event.metadata.items()}


def table(platform: dict[str, Any], name: str, days: list) -> pa.Table:  # type: ignore[type-arg]
    return read_days(platform["resources"]["storage"].table(name), days)


def assert_features_equal_the_reference(
    features: pa.Table, history: pa.Table, label_delay_us: int = DEFAULT_LABEL_DELAY_US
) -> None:
    """Each row's stateful features equal `fraud_core.state.replay` over the whole history."""
    reference = replay(history, label_delay_us=label_delay_us)
    index = {t: i for i, t in enumerate(history.column("transaction_id").to_pylist())}
    rows = np.array([index[t] for t in features.column("transaction_id").to_pylist()])
    for name in STATEFUL_FEATURES:
        expected = np.asarray(reference[name])[rows].astype(np.float32)
        got = features.column(name).to_numpy().astype(np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=name)


def test_spark_features_equal_the_reference_implementation(platform, history) -> None:  # type: ignore[no-untyped-def]
    spark = table(platform, "card_features", DAYS)
    assert sorted(spark.column("transaction_id").to_pylist()) == sorted(
        history.column("transaction_id").to_pylist()
    )
    assert_features_equal_the_reference(spark, history)


def test_a_nightly_day_alone_equals_the_reference_implementation(
    platform, instance, history
) -> None:  # type: ignore[no-untyped-def]
    """One day on its own (the nightly run) reads its older look-back days as per-card
    summaries and the rest as rows; the backfill above featurized every day in one pass."""
    day = DAYS[-1]
    day_of = pc.strftime(history.column("timestamp"), "%Y-%m-%d")
    expected_rows = pc.sum(pc.equal(day_of, day.isoformat())).as_py()
    result = run_range(instance, platform["resources"], ["card_features"], day, day)
    assert materialization_metadata(result, "card_features")["rows"] == expected_rows
    features = table(platform, "card_features", [day])
    assert features.num_rows == expected_rows
    assert_features_equal_the_reference(features, history)


def test_batch_features_follow_the_label_delay_and_skip_unknown_labels(
    history, spark_resource, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The Spark path with a 7-day delay, on history where some labels are unknown, gives the
    reference implementation's features (a null label counts nowhere)."""
    from fraud_assets.lib.batch import featurize_days
    from fraud_assets.lib.warehouse import write_day

    delay = 7 * DAY_US
    raw_history = with_unknown_labels(history)
    day_of = pc.strftime(raw_history.column("timestamp"), "%Y-%m-%d")
    for day in DAYS:
        rows = raw_history.filter(pc.equal(day_of, day.isoformat()))
        write_day(tmp_path / "raw", day, rows)
    featurize_days(spark_resource.spark_session, tmp_path / "raw", [DAYS[-1]], tmp_path / "out",
                   delay)  # fmt: skip
    features = read_days(tmp_path / "out", [DAYS[-1]])
    assert features.num_rows > 0
    assert_features_equal_the_reference(features, raw_history, label_delay_us=delay)
    three_days = replay(raw_history)["merchant_fraud_rate_7d"]
    seven_days = replay(raw_history, label_delay_us=delay)["merchant_fraud_rate_7d"]
    assert not np.array_equal(three_days, seven_days)  # the delay changes what is known


def test_a_champion_trained_with_another_label_delay_does_not_score(platform, instance) -> None:  # type: ignore[no-untyped-def]
    from fraud_assets.defs.resources import FeaturesResource

    resources = {**platform["resources"], "features": FeaturesResource(label_delay_days=7)}
    with pytest.raises(Exception, match="label delay of 3 days, features here use 7"):
        run_range(instance, resources, ["scored_transactions"], DAYS[-1], DAYS[-1])


def test_every_ingested_row_is_kept_or_quarantined(platform, history) -> None:  # type: ignore[no-untyped-def]
    assert table(platform, "raw_transactions", DAYS).num_rows == history.num_rows


def test_publishing_gives_a_champion_in_mlflow_and_the_model_store(platform) -> None:  # type: ignore[no-untyped-def]
    storage = platform["resources"]["storage"]
    bundle = storage.model_store.load_champion()
    assert bundle.metadata.metrics["pr_auc"] > 0.3
    published = platform["training"].asset_materializations_for_node("published_model")[0]
    registry_version = published.metadata["registry_version"].value
    client = MlflowClient(platform["resources"]["mlflow_tracking"].resolved_tracking_uri())
    champion = client.get_model_version_by_alias("fraudscale-fraud", CHAMPION_ALIAS)
    assert str(champion.version) == registry_version
    assert champion.tags["bundle_version"] == bundle.metadata.version
    run = client.get_run(champion.run_id)
    assert {"pr_auc", "roc_auc", "recall_at_alert_rate"} <= set(run.data.metrics)


def test_checks_ran_and_passed(platform) -> None:  # type: ignore[no-untyped-def]
    results = {c.check_name: c.passed for c in platform["training"].get_asset_check_evaluations()}
    assert results["fraud_model_quality"]
    assert results["onnx_matches_native"]
    assert results["onnx_single_row_latency"]
    assert "int8_quality_and_determinism" in results


def test_scored_days_have_one_row_per_input_and_alerts_above_threshold(platform) -> None:  # type: ignore[no-untyped-def]
    storage = platform["resources"]["storage"]
    threshold = storage.model_store.load_champion().metadata.threshold
    for day in SCORED_DAYS:
        features = table(platform, "card_features", [day])
        scored = table(platform, "scored_transactions", [day])
        assert scored.num_rows == features.num_rows
        assert pc.count_distinct(scored.column("transaction_id")).as_py() == scored.num_rows
        alerts = table(platform, "fraud_alerts", [day])
        assert alerts.num_rows == pc.sum(scored.column("is_alert")).as_py()
        assert pc.min(alerts.column("score")).as_py() >= np.float32(threshold)
        assert all(alerts.column("reasons").to_pylist())


def test_batch_scores_equal_the_scorer_on_reference_features(platform, history) -> None:  # type: ignore[no-untyped-def]
    from fraud_core.features import arrow_columns, feature_matrix
    from fraud_core.inference import Scorer

    scorer = Scorer(platform["resources"]["storage"].model_store.load_champion())
    expected = scorer.score(
        feature_matrix({**arrow_columns(history), **replay(history)}, scorer.contract)
    )
    by_id = dict(zip(history.column("transaction_id").to_pylist(), expected, strict=True))
    scored = table(platform, "scored_transactions", SCORED_DAYS)
    want = np.array([by_id[t] for t in scored.column("transaction_id").to_pylist()])
    np.testing.assert_allclose(scored.column("score").to_numpy(), want, atol=1e-6)


def test_rerunning_a_partition_replaces_it(platform, instance) -> None:  # type: ignore[no-untyped-def]
    day = SCORED_DAYS[0]
    before = table(platform, "scored_transactions", [day]).sort_by("transaction_id")
    run_range(instance, platform["resources"], ["scored_transactions"], day, day)
    after = table(platform, "scored_transactions", [day]).sort_by("transaction_id")
    assert after.equals(before)
    folder = platform["resources"]["storage"].table("scored_transactions")
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".staging")]


def test_a_model_trained_on_corrupted_labels_is_not_published(
    platform, tmp_path, instance, spark_resource, landing
) -> None:  # type: ignore[no-untyped-def]
    resources = make_resources(
        tmp_path, landing, spark_resource, models=platform["root"] / "models"
    )
    resources["mlflow_tracking"] = platform["resources"]["mlflow_tracking"]
    store = resources["storage"].model_store
    champion_before = store.champion_version()
    # The same features, with labels shuffled: what a broken label feed produces.
    source = platform["resources"]["storage"].table("card_features")
    target = resources["storage"].table("card_features")
    shutil.copytree(source, target)
    rng = np.random.default_rng(1)
    for path in target.rglob("*.parquet"):
        data = pq.read_table(path)
        labels = data.column("is_fraud").to_numpy(zero_copy_only=False)
        pq.write_table(
            data.set_column(
                data.schema.get_field_index("is_fraud"),
                "is_fraud",
                pa.array(rng.permutation(labels)),
            ),
            path,
        )
    result = run_unpartitioned(instance, resources, TRAINING, raise_on_error=False)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["fraud_model_quality"].passed
    assert not result.asset_materializations_for_node("published_model")
    assert store.champion_version() == champion_before


def test_rollback_points_alias_and_store_at_the_earlier_version(platform, instance) -> None:  # type: ignore[no-untyped-def]
    resources = platform["resources"]
    storage, tracking = resources["storage"], resources["mlflow_tracking"]
    first = storage.model_store.champion_version()
    client = MlflowClient(tracking.resolved_tracking_uri())
    first_registry = client.get_model_version_by_alias(
        tracking.registered_model, CHAMPION_ALIAS
    ).version
    run_unpartitioned(instance, resources, TRAINING)  # a second champion
    assert storage.model_store.champion_version() != first
    roll_back(tracking.client(), tracking.registered_model, first_registry, storage.model_store)
    assert storage.model_store.champion_version() == first
    assert (
        client.get_model_version_by_alias(tracking.registered_model, CHAMPION_ALIAS).version
        == first_registry
    )


def test_sensor_waits_for_new_labelled_days_then_asks_for_retraining(platform, instance) -> None:  # type: ignore[no-untyped-def]
    import dagster as dg

    from fraud_assets.defs.automation import new_labelled_days_sensor
    from fraud_assets.defs.resources import FeaturesResource, PolicyResource

    # Just trained on every labelled day: nothing new, so no run.
    result = new_labelled_days_sensor(
        dg.build_sensor_context(
            instance=instance,
            resources={"policy": PolicyResource(), "features": FeaturesResource()},
        )
    )
    assert not result.run_requests
    assert "0 new labelled days" in (result.skip_reason.skip_message or "")


def test_online_state_loads_end_of_day_states_into_redis(
    platform, history, instance, redis_server
) -> None:  # type: ignore[no-untyped-def]
    """Spark's end-of-day states, written by its executors, equal the reference replay's for
    every card and merchant, byte for byte."""
    from fraud_assets.defs.resources import OnlineStoreResource

    resources = dict(platform["resources"])
    unset = run_range(instance, resources, ["online_state"], DAYS[-1], DAYS[-1])
    assert materialization_metadata(unset, "online_state")["loaded"] is False
    resources["online_store"] = OnlineStoreResource(redis_url=redis_server.url)
    loaded = run_range(instance, resources, ["online_state"], DAYS[-1], DAYS[-1])
    cards, merchants = assert_online_states_equal_the_reference(redis_server.url, history)
    metadata = materialization_metadata(loaded, "online_state")
    assert (metadata["cards"], metadata["merchants"]) == (cards, merchants)


def assert_online_states_equal_the_reference(url: str, history: pa.Table) -> tuple[int, int]:
    """The Redis at `url` holds exactly the end states of `history` (which ends with the last
    day; ties in time in transaction id order), byte for byte; returns how many cards and
    merchants."""
    from fraud_core.online_store import connect, encoded_states

    cards, merchants = end_states(
        history.sort_by([("timestamp", "ascending"), ("transaction_id", "ascending")])
    )
    client = connect(url)
    expected = list(encoded_states(cards, merchants))
    stored = client.mget([key for key, _, _ in expected])
    assert stored == [value for _, value, _ in expected]
    assert len(client.keys("*")) == len(expected)  # and nothing else
    client.close()
    return len(cards), len(merchants)


def rerun_night(
    platform: dict[str, Any], landing: Path, history: pa.Table, env: dict[str, str]
) -> str:
    """Run the last scored day's Spark assets again in a Dagster run of its own process with
    `env`; assert its features equal the reference and its scores the first run's, and that
    no staging folder is left behind. Returns what the run printed (its logs included)."""
    day = SCORED_DAYS[-1]
    names = ["card_features", "scored_transactions"]
    before = {name: table(platform, name, [day]).sort_by("transaction_id") for name in names}
    run = subprocess.run(
        [sys.executable, "-c", NIGHT_RUN, str(platform["root"]), str(landing), str(day)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    features = table(platform, "card_features", [day])
    assert features.num_rows == before["card_features"].num_rows > 0
    assert_features_equal_the_reference(features, history)
    scores, earlier = (
        table(platform, "scored_transactions", [day]).sort_by("transaction_id"),
        before["scored_transactions"],
    )
    assert scores["transaction_id"].equals(earlier["transaction_id"])
    np.testing.assert_allclose(scores["score"].to_numpy(), earlier["score"].to_numpy(), atol=1e-6)
    warehouse = Path(platform["resources"]["storage"].warehouse_dir)
    assert not list(warehouse.glob("**/.staging-*"))  # no half-written day anywhere
    assert not list(warehouse.glob("**/_temporary"))
    return run.stdout + run.stderr


def test_a_nightly_run_on_a_standalone_cluster_survives_a_killed_worker(
    platform, landing, history, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """FRAUD_ASSETS_SPARK_MASTER=spark://...: a master and two workers on loopback featurize
    and score a day as the local session did, and load the online store as the reference
    replay, although one worker (and its executor) is killed mid-job: Spark runs its lost
    tasks again on the other."""
    from fraud_devtools.spark_cluster import LocalSparkCluster

    cluster = LocalSparkCluster(tmp_path / "cluster", workers=2, cores=1, memory="1536m")
    cluster.start()
    redis = LocalRedis(tmp_path / "redis")
    redis.start()
    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        wait_until(lambda: cluster.tasks_started(0) >= 4, "tasks on worker 0", 300)
        cluster.kill_worker(0)
        killed.append(cluster.tasks_started(0))

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    try:
        printed = rerun_night(platform, landing, history, {
            "FRAUD_ASSETS_SPARK_MASTER": cluster.master_url,
            "FRAUD_ASSETS_SPARK_DRIVER_MEMORY": "1g",
            "FRAUD_ASSETS_ONLINE_REDIS_URL": redis.url,
        })  # fmt: skip
        killer.join(timeout=10)
        after = cluster.tasks_started(1)
        assert_online_states_equal_the_reference(redis.url, history)
    finally:
        cluster.stop()
        redis.kill()
    assert killed  # the worker died while the job ran ...
    assert "Lost executor" in printed or "ExecutorLostFailure" in printed  # ... mid-job
    assert after > 0


def test_a_nightly_run_through_spark_connect_gives_the_same_features_and_scores(
    platform, landing, history, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """FRAUD_ASSETS_SPARK_REMOTE: a Dagster run whose Spark is a Spark Connect server
    featurizes and scores a day as the local session did (the features as the reference)."""
    from fraud_assets.lib.spark_session import server_config
    from fraud_devtools.spark_connect import LocalSparkConnect

    server = LocalSparkConnect(
        tmp_path, {**server_config(AssetSettings()), "spark.driver.memory": "1g"}, "local[2]"
    )
    server.start()
    try:
        # Its own process: PySpark allows no Connect session beside this one's local session.
        printed = rerun_night(platform, landing, history, {"FRAUD_ASSETS_SPARK_REMOTE": server.url})
    finally:
        server.stop()
    assert "session: pyspark.sql.connect.session" in printed


JDK_WITH_AOT = next((jdk for jdk in installed_jdks() if jdk.writes_aot_cache), None)


@pytest.mark.skipif(JDK_WITH_AOT is None, reason="no JDK 25+ installed beside the default one")
def test_a_nightly_run_on_a_newer_jdk_starts_from_its_aot_cache(
    platform, landing, history, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """FRAUD_ASSETS_JAVA_HOME names a JDK 25: `record` writes its AOT cache, and a nightly run
    whose driver must start from that cache (-XX:AOTMode=on fails without one) featurizes
    and scores a day as the default JDK's session did."""
    assert JDK_WITH_AOT is not None
    folder = tmp_path / "aot"
    cache = aot_cache_path(JDK_WITH_AOT, folder)
    record(JDK_WITH_AOT, cache, cards=2000)
    assert cache.stat().st_size > 10 * 2**20
    printed = rerun_night(platform, landing, history, {
        "FRAUD_ASSETS_JAVA_HOME": str(JDK_WITH_AOT.home),
        "FRAUD_ASSETS_SPARK_AOT": str(folder),
        "FRAUD_ASSETS_SPARK_DRIVER_JAVA_OPTIONS": "-XX:AOTMode=on",
    })  # fmt: skip
    assert f"java: {JDK_WITH_AOT.version}" in printed
    assert f"-XX:AOTCache={cache}" in printed


NIGHT_RUN = """
import datetime as dt, os, sys
from pathlib import Path
import dagster as dg
from fraud_assets.defs.resources import SparkResource
from fraud_assets.lib.spark_session import spark_config
from fraud_assets.runs import materialize_graph
from fraud_assets.settings import AssetSettings
from tests.fraud_assets.conftest import make_resources

root, landing, day = Path(sys.argv[1]), Path(sys.argv[2]), dt.date.fromisoformat(sys.argv[3])
settings = AssetSettings.from_env()
spark = SparkResource(
    spark_config={**spark_config(settings), "spark.sql.shuffle.partitions": "4"},
    java_home=settings.java_home,
)
online = ["online_state"] if settings.online_redis_url else []
with dg.DagsterInstance.ephemeral() as instance:
    materialize_graph(
        ["card_features", "scored_transactions", *online], settings=settings,
        instance=instance, days=(day, day),
        resources=make_resources(root, landing, spark, redis_url=settings.online_redis_url),
    )
session = spark.spark_session
print("session:", type(session).__module__)
if not os.environ.get("FRAUD_ASSETS_SPARK_REMOTE"):
    print("java:", session.sparkContext._jvm.System.getProperty("java.version"))
    print("options:", session.conf.get("spark.driver.extraJavaOptions", ""))
"""


def test_batch_decisions_log_the_champion_and_the_challenger_in_shadow(
    platform, instance, history
) -> None:  # type: ignore[no-untyped-def]
    from fraud_core.features import arrow_columns, feature_matrix

    store = platform["resources"]["storage"].model_store
    champion = store.load_champion()
    store.add(as_version(champion, "shadow-1"))
    store.point_to("shadow-1", CHALLENGER)
    day = SCORED_DAYS[-1]
    try:
        run_range(instance, platform["resources"], ["batch_decisions"], day, day)
    finally:
        store.clear(CHALLENGER)
    decisions = table(platform, "batch_decisions", [day])
    scored = table(platform, "scored_transactions", [day])
    expected = dict(
        zip(scored.column("transaction_id").to_pylist(), scored.column("score").to_pylist(),
            strict=True)
    )  # fmt: skip
    x = feature_matrix({**arrow_columns(history), **replay(history)}, champion.metadata.contract)
    row = {t: i for i, t in enumerate(history.column("transaction_id").to_pylist())}
    for role, version in ((CHAMPION, champion.metadata.version), (SHADOW, "shadow-1")):
        mine = decisions.filter(pc.equal(decisions.column("role"), role))
        ids = mine.column("transaction_id").to_pylist()
        assert sorted(ids) == sorted(expected)
        assert set(mine.column("model_version").to_pylist()) == {version}
        assert set(mine.column("path").to_pylist()) == {"batch"}
        np.testing.assert_array_equal(
            mine.column("score").to_numpy(), np.array([expected[t] for t in ids], np.float32)
        )
        vectors = np.asarray(mine.column("features").to_pylist(), dtype=np.float32)
        np.testing.assert_allclose(vectors, x[[row[t] for t in ids]], rtol=1e-6, atol=1e-6)
        assert mine.column("decision_id").to_pylist()[:5] == [
            decision_id(t, version, role) for t in ids[:5]
        ]


# The skew check: real REST decisions (a real Redis, a real Kafka decision log) against the
# Spark path's features of the same transactions.


def first_of_card_in_an_hour(history: pa.Table, day: dt.date) -> tuple[int, pa.Table]:
    """The busiest hour of `day` (its start, µs) and its transactions that are their card's
    first in that hour: with the states at the hour's start in Redis, REST serves them the
    features the batch path computes (no transaction or label of the hour is missing)."""
    ts = timestamps_us(history.column("timestamp"))
    start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1e6)
    hours = (ts - start) // HOUR_US
    busiest = int(np.bincount(hours[(hours >= 0) & (hours < 24)]).argmax())
    rows = np.flatnonzero(hours == busiest)
    rows = rows[np.argsort(ts[rows], kind="stable")]
    cards = history.column("card_id").to_numpy(zero_copy_only=False)[rows]
    _, first = np.unique(cards, return_index=True)
    return start + busiest * HOUR_US, history.take(pa.array(rows[np.sort(first)]))


def skew_day(
    platform, instance, history, kafka: str, redis_server, tmp_path: Path, *,
    redis_stops_after: int | None = None,
) -> tuple[Any, list[str], list[str]]:  # type: ignore[no-untyped-def]  # fmt: skip
    """REST scores one hour's transactions (Redis stopped after `redis_stops_after` of them),
    then `decision_log` and `feature_skew` run on their day. Returns the run, the
    transaction ids sent and those answered degraded."""
    day = DAYS[-1]
    hour_start, sent = first_of_card_in_an_hour(history, day)
    write_states(redis_server.url, *end_states(history, until_us=hour_start))
    topic = f"skew-{tmp_path.name}.decisions"
    resources = platform["resources"]
    settings = ServingSettings(
        model_store_dir=str(resources["storage"].model_store.root), redis_url=redis_server.url,
        redis_timeout_ms=200, decision_log_bootstrap=kafka, decision_log_topic=topic,
    )  # fmt: skip
    degraded = []
    with TestClient(create_app(settings)) as rest:
        for i, row in enumerate(sent.to_pylist()):
            if i == redis_stops_after:
                redis_server.stop()
            body = rest.post("/v1/score", content=wire(row)).json()
            if body["features_degraded"]:
                degraded.append(row["transaction_id"])
    with_log = {
        **resources,
        "rollout": RolloutResource(decision_log_bootstrap=kafka, decision_log_topic=topic),
    }
    result = run_range(instance, with_log, ["decision_log", "feature_skew"], day, day)
    return result, sent.column("transaction_id").to_pylist(), degraded


def skew_report(result: Any, platform: dict[str, Any]) -> tuple[dict[str, Any], Any, pa.Table]:
    (check,) = result.get_asset_check_evaluations()
    rows = table(platform, "feature_skew", [DAYS[-1]])
    return materialization_metadata(result, "feature_skew"), check, rows


def test_a_clean_day_of_rest_decisions_has_no_feature_skew(
    platform, instance, history, kafka, redis_server, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    result, sent, degraded = skew_day(platform, instance, history, kafka, redis_server, tmp_path)
    meta, check, rows = skew_report(result, platform)
    assert len(sent) > 50
    assert not degraded
    assert meta["rows_compared"] == len(sent)
    assert meta["served_degraded"] == 0
    assert meta["mismatched_rows"] == 0
    assert rows.num_rows == 0
    assert check.passed


def test_rows_served_while_redis_was_down_are_exactly_the_skew_and_called_degraded(
    platform, instance, history, kafka, redis_server, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    result, sent, degraded = skew_day(
        platform, instance, history, kafka, redis_server, tmp_path, redis_stops_after=40
    )
    meta, check, rows = skew_report(result, platform)
    assert degraded == sent[40:]
    assert meta["rows_compared"] == len(sent)
    assert meta["served_degraded"] == len(degraded)
    # A degraded vector differs where a card or a merchant had history (a first-ever
    # transaction's state is the default anyway).
    differing = set(rows.column("transaction_id").to_pylist())
    assert differing <= set(degraded)
    assert len(differing) > 0.8 * len(degraded)
    assert set(rows.column("cause").to_pylist()) == {"degraded"}
    assert meta["causes"]["degraded"] == len(differing)
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert "| degraded |" in meta["report"]


def test_a_feature_computed_wrongly_on_one_path_is_caught_and_named(
    platform, instance, history, kafka, redis_server, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A fault the real code cannot make on purpose: REST adds 1 to one feature of every
    tenth card."""
    j = STATEFUL_FEATURES.index("card_amount_sum_24h")
    computed = scoring_service.stateful_rows

    def wrong(transactions, cards, merchants):  # type: ignore[no-untyped-def]
        rows = computed(transactions, cards, merchants)
        for t, values in zip(transactions, rows, strict=True):
            if bucket(t.card_id) < 0.1:
                values[j] += 1.0
        return rows

    monkeypatch.setattr(scoring_service, "stateful_rows", wrong)
    result, sent, _ = skew_day(platform, instance, history, kafka, redis_server, tmp_path)
    meta, check, rows = skew_report(result, platform)
    card_of = dict(zip(history.column("transaction_id").to_pylist(),
                       history.column("card_id").to_pylist(), strict=True))  # fmt: skip
    wronged = {t for t in sent if bucket(card_of[t]) < 0.1}
    assert wronged
    assert set(rows.column("transaction_id").to_pylist()) == wronged
    assert rows.column("features").to_pylist() == [["card_amount_sum_24h"]] * len(wronged)
    assert set(rows.column("cause").to_pylist()) == {"unexplained"}
    feature = next(
        r for r in meta["features"].records if r.data["feature"] == "card_amount_sum_24h"
    )
    assert feature.data["mismatches"] == len(wronged)
    assert feature.data["max_abs_delta"] == pytest.approx(1.0, rel=1e-3)
    assert not check.passed
