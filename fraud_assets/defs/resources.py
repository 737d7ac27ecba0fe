"""Resources, and the one place that picks them from the environment (FRAUD_ASSETS_*)."""

import os
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from fraud_assets.lib.jvm import Jdk, aot_cache_path, driver_java_options, spark_jdk
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

    def client(self) -> Any:
        from fraud_assets.lib.registry import tracking_client

        return tracking_client(self)


class OnlineStoreResource(dg.ConfigurableResource):
    """The REST service's Redis, for deployments where the nightly run loads its states."""

    redis_url: str = ""
    """e.g. redis://127.0.0.1:6379/0; empty: online_state loads nothing (stream workers
    keep the states current instead)."""


def _env(name: str, default: str) -> str:
    return os.environ.get(f"FRAUD_ASSETS_{name}", default)


def spark_config() -> dict[str, Any]:
    """local[*] by default; FRAUD_ASSETS_SPARK_MASTER or FRAUD_ASSETS_SPARK_REMOTE (Spark
    Connect, sc://host:15002) point at a cluster. A Connect session takes only the
    per-session SQL settings; the server keeps its own (`server_config` for a local one)."""
    remote = _env("SPARK_REMOTE", "")
    if remote:
        return {**session_config(), "spark.remote": remote}
    return local_config(_env("SPARK_MASTER", "local[*]"))


def local_config(master: str = "local[*]") -> dict[str, Any]:
    """A session whose driver runs in this process, on `master`."""
    return {**session_config(), **server_config(), "spark.master": master}


def session_config() -> dict[str, Any]:
    """The per-session SQL settings the assets' Spark code expects."""
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": _env("SPARK_SHUFFLE_PARTITIONS", "8"),
        "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
    }


def server_config() -> dict[str, str]:
    """Settings of the Spark driver itself: for a local session or a local Connect server."""
    config = {
        "spark.ui.enabled": _env("SPARK_UI", "false"),
        "spark.driver.memory": _env("SPARK_DRIVER_MEMORY", "4g"),
    }
    cache = spark_aot_cache(spark_jdk(spark_jdk_setting()))
    options = " ".join(
        part for part in (_env("SPARK_DRIVER_JAVA_OPTIONS", ""), driver_java_options(cache)) if part
    )
    if options:
        config["spark.driver.extraJavaOptions"] = options
    return config


def spark_jdk_setting() -> str:
    """FRAUD_ASSETS_JAVA_HOME: the JDK of the Spark driver. Empty (the default) keeps what
    spark-submit finds (JAVA_HOME, else `java` on PATH); `auto` takes the newest JDK installed
    (a JDK 25 starts from an AOT cache: `make spark-aot`); or a JDK folder."""
    return _env("JAVA_HOME", "")


def spark_aot_cache(jdk: Jdk | None) -> Path | None:
    """The AOT cache for `jdk` under FRAUD_ASSETS_SPARK_AOT (a folder; default data/spark-aot,
    `off` for none). None for JDKs that cannot write one."""
    folder = _env("SPARK_AOT", f"{_env('DATA_DIR', 'data')}/spark-aot")
    if jdk is None or not jdk.writes_aot_cache or folder == "off":
        return None
    return aot_cache_path(jdk, Path(folder))


def use_spark_jdk() -> Jdk | None:
    """Point this process's spark-submit at the configured JDK (before a local session starts
    its driver); returns that JDK."""
    jdk = spark_jdk(spark_jdk_setting())
    if jdk is not None and spark_jdk_setting():
        os.environ["JAVA_HOME"] = str(jdk.home)
    return jdk


class SparkResource(LazyPySparkResource):
    """dagster-pyspark's lazy session, with its driver on the JDK FRAUD_ASSETS_JAVA_HOME names."""

    def _init_session(self) -> None:
        use_spark_jdk()
        super()._init_session()


def get_resources() -> dict[str, Any]:
    """Resources for this environment: embedded defaults unless FRAUD_ASSETS_* say otherwise."""
    data = _env("DATA_DIR", "data")
    return {
        "storage": StorageResource(
            landing_dir=_env("LANDING_DIR", f"{data}/landing"),
            warehouse_dir=_env("WAREHOUSE_DIR", f"{data}/warehouse"),
            model_store_dir=_env("MODEL_STORE_DIR", f"{data}/models"),
        ),
        "mlflow_tracking": MlflowResource(
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""),
            local_dir=_env("MLFLOW_DIR", f"{data}/mlflow"),
        ),
        "spark": SparkResource(spark_config=spark_config()),
        "online_store": OnlineStoreResource(redis_url=_env("ONLINE_REDIS_URL", "")),
    }
