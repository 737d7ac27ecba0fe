"""Real parts for the asset graph: a Spark session, a Dagster instance, an MLflow store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from fraud_assets.defs.resources import (
    FeaturesResource,
    MlflowResource,
    MonitoringResource,
    OnlineStoreResource,
    PolicyResource,
    RolloutResource,
    SparkResource,
    StorageResource,
)
from fraud_assets.lib.spark_session import local_config
from fraud_assets.runs import materialize_graph
from fraud_assets.settings import AssetSettings
from tests.conftest import SMALL_WORLD

DAYS = [SMALL_WORLD.start + dt.timedelta(days=i) for i in range(SMALL_WORLD.days)]
TRAINING_CONFIG = {
    "ops": {
        "training_set": {"config": {"warmup_days": 2, "validation_days": 3}},
        "fraud_model": {"config": {"tuning_trials": 3, "n_estimators": 100}},
    }
}


@pytest.fixture(scope="session")
def spark_resource() -> Iterator[SparkResource]:
    config = {**local_config(AssetSettings(), "local[2]"), "spark.sql.shuffle.partitions": "4"}
    resource = SparkResource(spark_config=config)
    yield resource
    resource.spark_session.stop()


@pytest.fixture(scope="session")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    """A real Dagster instance with SQLite storage in a temporary DAGSTER_HOME."""
    with dg.DagsterInstance.local_temp(str(tmp_path_factory.mktemp("dagster_home"))) as inst:
        yield inst


def make_resources(
    root: Path, landing: Path, spark: SparkResource, models: Path | None = None,
    redis_url: str = "", decision_log_bootstrap: str = "", decision_log_topic: str = "",
    pushgateway_url: str = "",
) -> dict[str, Any]:  # fmt: skip
    return {
        "storage": StorageResource(
            landing_dir=str(landing),
            warehouse_dir=str(root / "warehouse"),
            model_store_dir=str(models or root / "models"),
        ),
        "mlflow_tracking": MlflowResource(local_dir=str(root / "mlflow")),
        "spark": spark,
        "online_store": OnlineStoreResource(redis_url=redis_url),
        "features": FeaturesResource(),
        "policy": PolicyResource(),
        "rollout": RolloutResource(
            decision_log_bootstrap=decision_log_bootstrap,
            decision_log_topic=decision_log_topic or "fraudscale.decisions",
            canary_min_decisions=50,
        ),
        "monitoring": MonitoringResource(pushgateway_url=pushgateway_url),
    }


def run_range(
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    selection: list[str],
    first: dt.date,
    last: dt.date,
) -> dg.ExecuteInProcessResult:
    """One run over a range of days, as a single-run backfill launches it."""
    return materialize_graph(
        selection, settings=AssetSettings(), instance=instance, resources=resources,
        days=(first, last),
    )  # fmt: skip


def run_unpartitioned(
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    selection: list[str],
    *,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    return materialize_graph(
        selection,
        settings=AssetSettings(),
        instance=instance,
        resources=resources,
        run_config=TRAINING_CONFIG,
        raise_on_error=raise_on_error,
    )
