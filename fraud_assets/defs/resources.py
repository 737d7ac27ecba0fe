"""Resources, built from the code location's settings (fraud_assets.settings) by
`resources_for`."""

from pathlib import Path
from typing import Any

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from fraud_assets.lib.registry import tracking_client
from fraud_assets.lib.rollout import Rollout
from fraud_assets.lib.spark_session import prepare_local_driver, spark_config
from fraud_assets.settings import AssetSettings
from fraud_core.bundle import BundleError, ModelBundle, validate_bundle
from fraud_core.model_store import ModelStore


class StorageResource(dg.ConfigurableResource):
    """Where fraudscale keeps its files; relative paths are taken from the working directory."""

    landing_dir: str = "data/landing"
    """Folder the transactions land in (simulator output or your own Parquet/CSV)."""
    warehouse_dir: str = "data/warehouse"
    """Root of the day-partitioned tables the assets write."""
    model_store_dir: str = "data/models"
    """The local model store that the REST service and stream workers watch."""

    def table(self, name: str) -> Path:
        return Path(self.warehouse_dir).resolve() / name

    @property
    def landing(self) -> Path:
        return Path(self.landing_dir).resolve()

    @property
    def model_store(self) -> ModelStore:
        return ModelStore(Path(self.model_store_dir).resolve())


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and model registry."""

    tracking_uri: str = ""
    """A tracking server URL, or empty for a SQLite store under `local_dir`."""
    local_dir: str = "data/mlflow"
    """SQLite database and artifact folder when no tracking server is given."""
    experiment: str = "fraudscale"
    registered_model: str = "fraudscale-fraud"
    """Registry name under which champions are registered (alias "champion")."""

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        folder = Path(self.local_dir).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}"

    def artifact_location(self) -> str | None:
        """Where a new experiment keeps artifacts: beside a local store's database; a
        tracking server's own default otherwise."""
        if self.tracking_uri:
            return None
        return (Path(self.local_dir).resolve() / "artifacts").as_uri()

    def client(self) -> Any:
        return tracking_client(
            self.resolved_tracking_uri(), self.experiment, self.artifact_location()
        )


class OnlineStoreResource(dg.ConfigurableResource):
    """The REST service's Redis, for deployments where the nightly run loads its states."""

    redis_url: str = ""
    """e.g. redis://127.0.0.1:6379/0; empty: online_state loads nothing (stream workers
    keep the states current instead)."""


class FeaturesResource(dg.ConfigurableResource):
    """How features are derived from the data: the label delay, and vocabulary sizes."""

    label_delay_days: float = 3.0
    """In history, a label is taken to be known this long after its transaction."""
    vocabulary_size: int = 64
    """Most values of each categorical column a model learns; the rest encode as unknown."""

    @property
    def label_delay_us(self) -> int:
        return round(self.label_delay_days * 86_400_000_000)


class PolicyResource(dg.ConfigurableResource):
    """The gates a model passes before it is published, and when to retrain."""

    min_pr_auc: float = 0.3
    """A model below this PR-AUC on the validation days is never published."""
    champion_tolerance: float = 0.05
    """A new model may be at most this much (relative PR-AUC) worse than the champion."""
    latency_p99_ms: float = 5.0
    """Single-row scoring budget for the exported model (99th percentile, milliseconds)."""
    retrain_after_days: int = 7
    """The sensor retrains once this many new labelled days arrived."""


class RolloutResource(dg.ConfigurableResource):
    """Where the online decision log is read from, and how the verdict judges a canary."""

    decision_log_bootstrap: str = ""
    """Kafka bootstrap servers of the decision topic; empty: no online decisions to read."""
    decision_log_topic: str = "fraudscale.decisions"
    canary_alert_budget: float = 1.5
    """Most a canary's alert rate may be, as a multiple of the champion's."""
    canary_min_decisions: int = 200
    auto_abort: bool = True
    auto_promote: bool = False


class MonitoringResource(dg.ConfigurableResource):
    """Where the nightly figures go, and how much online/offline feature skew is tolerated."""

    pushgateway_url: str = ""
    """A Prometheus Pushgateway (host:port or URL) for the drift and skew figures; empty:
    not pushed."""
    skew_warn_rate: float = 1e-4
    skew_fail_rate: float = 1e-3
    late_after_seconds: float = 3600.0
    """A decision made longer than this after its transaction counts as late (its online
    state had moved on)."""


class SparkResource(LazyPySparkResource):
    """dagster-pyspark's lazy session, with its driver on the configured JDK (and on loopback
    for a local master)."""

    java_home: str = ""
    """The driver's JDK (AssetSettings.java_home)."""

    def _init_session(self) -> None:
        prepare_local_driver(AssetSettings(java_home=self.java_home))
        super()._init_session()


def champion_for_features(storage: StorageResource, features: FeaturesResource) -> ModelBundle:
    """The published champion, if its data contract fits the features computed here (the
    label delay); dg.Failure saying why not otherwise."""
    try:
        bundle = storage.model_store.load_champion()
        validate_bundle(bundle, label_delay_us=features.label_delay_us)
    except BundleError as exc:
        raise dg.Failure(description=f"no usable published model: {exc}") from None
    return bundle


def rollout_of(storage: StorageResource, mlflow_tracking: MlflowResource) -> Rollout:
    """Rollout steps on this code location's model store and registry."""
    return Rollout(
        storage.model_store,
        mlflow_tracking.client(),
        mlflow_tracking.registered_model,
        mlflow_tracking.experiment,
    )


def resources_for(settings: AssetSettings) -> dict[str, Any]:
    """Every resource of the code location, from its settings."""
    return {
        "storage": StorageResource(
            landing_dir=settings.landing,
            warehouse_dir=settings.warehouse,
            model_store_dir=settings.model_store,
        ),
        "mlflow_tracking": MlflowResource(
            tracking_uri=settings.mlflow_tracking_uri, local_dir=settings.mlflow_local_dir
        ),
        "spark": SparkResource(spark_config=spark_config(settings), java_home=settings.java_home),
        "online_store": OnlineStoreResource(redis_url=settings.online_redis_url),
        "features": FeaturesResource(
            label_delay_days=settings.label_delay_days, vocabulary_size=settings.vocabulary_size
        ),
        "policy": PolicyResource(
            min_pr_auc=settings.min_pr_auc,
            champion_tolerance=settings.champion_tolerance,
            latency_p99_ms=settings.latency_p99_ms,
            retrain_after_days=settings.retrain_after_days,
        ),
        "monitoring": MonitoringResource(
            pushgateway_url=settings.pushgateway_url,
            skew_warn_rate=settings.skew_warn_rate,
            skew_fail_rate=settings.skew_fail_rate,
            late_after_seconds=settings.skew_late_after_seconds,
        ),
        "rollout": RolloutResource(
            decision_log_bootstrap=settings.decision_log_bootstrap,
            decision_log_topic=settings.decision_log_topic,
            canary_alert_budget=settings.canary_alert_budget,
            canary_min_decisions=settings.canary_min_decisions,
            auto_abort=settings.rollout_auto_abort,
            auto_promote=settings.rollout_auto_promote,
        ),
    }
