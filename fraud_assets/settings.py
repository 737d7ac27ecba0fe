"""Settings of the asset code location, from FRAUD_ASSETS_* environment variables.

Read once, when Dagster loads the code location (`fraud_assets.definitions`), into one typed
object; every resource, partition definition and policy is built from it. Nothing reads the
environment at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from fraud_core.settings import settings_from_env

PREFIX = "FRAUD_ASSETS_"


class AssetSettings(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: str = "data"
    """Root of the default folders below."""
    landing_dir: str = ""
    """Where transactions land (simulator output or your own files); default <data_dir>/landing."""
    warehouse_dir: str = ""
    """Root of the day-partitioned tables; default <data_dir>/warehouse."""
    model_store_dir: str = ""
    """The local model store the REST service and stream workers watch; default
    <data_dir>/models."""
    mlflow_dir: str = ""
    """SQLite tracking store and artifacts when no tracking server is set; default
    <data_dir>/mlflow."""
    mlflow_tracking_uri: str = ""
    """An MLflow tracking server (MLFLOW_TRACKING_URI also sets it); empty: the SQLite store."""
    start_date: str = "2026-01-05"
    """First daily partition (the simulator's default start)."""
    spark_master: str = "local[*]"
    """A Spark master URL for the nightly job's driver in this process."""
    spark_remote: str = ""
    """A Spark Connect URL (sc://host:15002), used instead of a local driver when set."""
    spark_shuffle_partitions: int = 8
    """spark.sql.shuffle.partitions of every session."""
    spark_ui: bool = False
    """The driver's web UI (on loopback when on)."""
    spark_driver_memory: str = "4g"
    spark_driver_java_options: str = ""
    """More driver JVM options (spark.driver.extraJavaOptions)."""
    java_home: str = ""
    """The Spark driver's JDK: empty keeps what spark-submit finds (JAVA_HOME, else java on
    PATH); `auto` takes the newest JDK installed (a JDK 25 starts from its AOT cache); or a
    JDK folder."""
    spark_aot: str = ""
    """Folder of AOT caches for JDK 25+ drivers (`make spark-aot`); default <data_dir>/spark-aot;
    `off` for none."""
    online_redis_url: str = ""
    """The REST service's Redis, loaded by `online_state` in the nightly job (redis://,
    redis+sentinel:// or redis+cluster://, as the REST service's setting); empty: nothing
    is loaded (stream workers keep the states current)."""
    label_delay_days: float = 3.0
    """In history, a label is taken to be known this long after its transaction (chargebacks
    arrive late). Features, training and the online store's nightly load use it; a model
    trained with another delay is refused for scoring."""
    vocabulary_size: int = 64
    """Most values of each categorical column a model learns (by frequency on its training
    days); the rest encode as unknown."""
    min_pr_auc: float = 0.3
    """A model below this PR-AUC on the validation days is never published."""
    champion_tolerance: float = 0.05
    """A new model may be at most this much (relative PR-AUC) worse than the champion."""
    latency_p99_ms: float = 5.0
    """Single-row scoring budget of the exported model (99th percentile, milliseconds)."""
    retrain_after_days: int = 7
    """The sensor retrains once this many new labelled days arrived."""
    decision_log_bootstrap: str = ""
    """Kafka bootstrap servers of the decision topic the REST service and the stream workers
    write (read by `decision_log`); empty: only the batch path's decisions are judged."""
    decision_log_topic: str = "fraudscale.decisions"
    canary_alert_budget: float = 1.5
    """A canary alerting on more than this many times the champion's alert rate fails the
    verdict's check (and is aborted by the sensor when `rollout_auto_abort`)."""
    canary_min_decisions: int = 200
    """Decisions a canary needs on a day before its alert rate is judged."""
    rollout_auto_abort: bool = True
    """The rollout sensor aborts a canary over its alert-rate budget."""
    rollout_auto_promote: bool = False
    """The rollout sensor promotes a canary whose labelled verdict is better."""
    pushgateway_url: str = ""
    """A Prometheus Pushgateway for the nightly figures (score drift, feature skew); empty:
    not pushed."""
    skew_warn_rate: float = 1e-4
    """The feature_skew check warns above this share of online decisions whose served
    features differ from the offline ones..."""
    skew_fail_rate: float = 1e-3
    """...and fails above this one."""
    skew_late_after_seconds: float = 3600.0
    """The skew check calls a decision made longer than this after its transaction late."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AssetSettings:
        """Defaults overridden by FRAUD_ASSETS_<FIELD> variables (and MLFLOW_TRACKING_URI)."""
        env = os.environ if environ is None else environ
        settings = settings_from_env(cls, PREFIX, env)
        if not settings.mlflow_tracking_uri and env.get("MLFLOW_TRACKING_URI"):
            settings = msgspec.structs.replace(
                settings, mlflow_tracking_uri=env["MLFLOW_TRACKING_URI"]
            )
        return settings

    def _under_data(self, value: str, name: str) -> str:
        return value or str(Path(self.data_dir) / name)

    @property
    def label_delay_us(self) -> int:
        return round(self.label_delay_days * 86_400_000_000)

    @property
    def landing(self) -> str:
        return self._under_data(self.landing_dir, "landing")

    @property
    def warehouse(self) -> str:
        return self._under_data(self.warehouse_dir, "warehouse")

    @property
    def model_store(self) -> str:
        return self._under_data(self.model_store_dir, "models")

    @property
    def mlflow_local_dir(self) -> str:
        return self._under_data(self.mlflow_dir, "mlflow")

    @property
    def spark_aot_dir(self) -> str:
        return self._under_data(self.spark_aot, "spark-aot")
