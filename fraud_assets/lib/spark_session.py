"""The Spark settings of the nightly job: a local driver, or a Spark Connect session.

Local drivers bind and advertise loopback only, on the JDK `java_home` names, starting from
that JDK's AOT cache when one is recorded (fraud_assets.lib.jvm).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from fraud_assets.lib.jvm import Jdk, aot_cache_path, driver_java_options, spark_jdk
from fraud_assets.settings import AssetSettings


def spark_config(settings: AssetSettings) -> dict[str, Any]:
    """local[*] by default; `spark_master` or `spark_remote` (Spark Connect) point at a
    cluster. A Connect session takes only the per-session SQL settings; the server keeps its
    own (`server_config` for a local one)."""
    if settings.spark_remote:
        return {**session_config(settings), "spark.remote": settings.spark_remote}
    return local_config(settings, settings.spark_master)


def local_config(settings: AssetSettings, master: str = "local[*]") -> dict[str, Any]:
    """A session whose driver runs in this process, on `master`."""
    config = {**session_config(settings), **server_config(settings), "spark.master": master}
    if on_loopback(master):
        config |= LOOPBACK
    return config


LOOPBACK = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
"""Without these a driver resolves the host name, warns that it is a loopback address and
binds (and advertises) the machine's outward interface instead."""


def on_loopback(master: str) -> bool:
    """A local master, or a cluster on this machine's loopback (the tests' standalone one)."""
    host = master.split("://", 1)[-1].split(":", 1)[0]
    return master.startswith("local") or host in ("127.0.0.1", "localhost")


def session_config(settings: AssetSettings) -> dict[str, Any]:
    """The per-session SQL settings the assets' Spark code expects."""
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
    }


def server_config(settings: AssetSettings) -> dict[str, str]:
    """Settings of the Spark driver itself: for a local session or a local Connect server."""
    config = {
        "spark.ui.enabled": str(settings.spark_ui).lower(),
        "spark.driver.memory": settings.spark_driver_memory,
    }
    cache = spark_aot_cache(settings, spark_jdk(settings.java_home))
    options = " ".join(
        part for part in (settings.spark_driver_java_options, driver_java_options(cache)) if part
    )
    if options:
        config["spark.driver.extraJavaOptions"] = options
    return config


def spark_aot_cache(settings: AssetSettings, jdk: Jdk | None) -> Path | None:
    """The AOT cache for `jdk` under the settings' folder; None for JDKs that cannot write
    one, or with `spark_aot=off`."""
    if jdk is None or not jdk.writes_aot_cache or settings.spark_aot == "off":
        return None
    return aot_cache_path(jdk, Path(settings.spark_aot_dir))


def prepare_local_driver(settings: AssetSettings) -> Jdk | None:
    """Set up this process before a local session starts its driver: spark-submit runs the
    configured JDK, and on loopback the driver's web UI binds 127.0.0.1 and Python workers run
    this interpreter (with its packages), not the first python3 on PATH. Returns the JDK."""
    jdk = spark_jdk(settings.java_home)
    if jdk is not None and settings.java_home:
        os.environ["JAVA_HOME"] = str(jdk.home)
    if not settings.spark_remote and on_loopback(settings.spark_master):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return jdk
