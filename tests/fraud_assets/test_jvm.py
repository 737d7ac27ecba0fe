"""Which JDK a Spark driver gets (FRAUD_ASSETS_JAVA_HOME) and when it starts from an AOT cache.

The nightly run on a JDK 25 with a recorded cache is in test_graph.py (real Spark)."""

from pathlib import Path

import pytest

from fraud_assets.lib.jvm import driver_java_options, installed_jdks, spark_jdk
from fraud_assets.lib.spark_session import local_config, server_config, spark_aot_cache
from fraud_assets.settings import AssetSettings

pytestmark = pytest.mark.unit


def install_jdk(root: Path, name: str, version: str) -> Path:
    """A JDK's folder as installers lay it out: `release` and `bin/java`."""
    home = root / name
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("")
    (home / "release").write_text(f'IMPLEMENTOR="x"\nJAVA_VERSION="{version}"\n')
    return home


def test_auto_finds_the_newest_jdk_spark_runs_on(tmp_path: Path) -> None:
    install_jdk(tmp_path, "java-17", "17.0.15")
    install_jdk(tmp_path, "temurin-25", "25.0.3")
    install_jdk(tmp_path, "temurin-25-old", "25.0.1")
    install_jdk(tmp_path, "java-11", "11.0.2")  # too old for pyspark 4
    (tmp_path / "jre-without-release" / "bin").mkdir(parents=True)
    found = [jdk.version for jdk in installed_jdks((tmp_path,))]
    assert found == ["25.0.3", "25.0.1", "17.0.15"]


def test_a_setting_that_names_no_jdk_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=str(tmp_path)):
        spark_jdk(str(tmp_path))


def test_only_a_jdk_25_with_a_recorded_cache_starts_from_it(tmp_path: Path) -> None:
    settings = AssetSettings(spark_aot=str(tmp_path / "aot"))
    old = spark_jdk(str(install_jdk(tmp_path, "java-17", "17.0.15")))
    new = spark_jdk(str(install_jdk(tmp_path, "temurin-25", "25.0.3")))
    assert old is not None
    assert new is not None
    cache = spark_aot_cache(settings, new)
    assert cache is not None
    assert "25.0.3" in cache.name
    assert driver_java_options(cache) == ""  # not recorded yet
    cache.parent.mkdir()
    cache.write_bytes(b"cache")
    assert driver_java_options(cache) == f"-XX:AOTCache={cache}"
    assert spark_aot_cache(settings, old) is None
    assert driver_java_options(spark_aot_cache(settings, old)) == ""


def test_the_driver_settings_carry_the_cache_unless_it_is_off(tmp_path: Path) -> None:
    home = install_jdk(tmp_path, "temurin-25", "25.0.3")
    settings = AssetSettings.from_env({
        "FRAUD_ASSETS_JAVA_HOME": str(home),
        "FRAUD_ASSETS_SPARK_AOT": str(tmp_path / "aot"),
        "FRAUD_ASSETS_SPARK_DRIVER_JAVA_OPTIONS": "-Xss4m",
    })  # fmt: skip
    cache = spark_aot_cache(settings, spark_jdk(str(home)))
    assert cache is not None
    cache.parent.mkdir()
    cache.write_bytes(b"cache")
    options = server_config(settings)["spark.driver.extraJavaOptions"]
    assert options == f"-Xss4m -XX:AOTCache={cache}"
    off = AssetSettings(java_home=str(home), spark_aot="off", spark_driver_java_options="-Xss4m")
    assert server_config(off)["spark.driver.extraJavaOptions"] == "-Xss4m"


def test_a_local_driver_binds_and_advertises_loopback_a_remote_cluster_does_not() -> None:
    settings = AssetSettings()
    for master in ("local[2]", "spark://127.0.0.1:7077"):
        config = local_config(settings, master)
        assert config["spark.driver.host"] == config["spark.driver.bindAddress"] == "127.0.0.1"
    remote = local_config(settings, "spark://spark-master.prod:7077")
    assert "spark.driver.host" not in remote
