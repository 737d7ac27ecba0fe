"""Record the Spark driver's AOT cache for a JDK 25+: one training run of the assets' Spark
steps on a small simulated day in a fresh JVM, which writes the cache as it exits; later
drivers on that JDK start from it (fraud_assets.lib.spark_session).

    FRAUD_ASSETS_JAVA_HOME=auto uv run python -m fraud_assets.lib.spark_aot record
    FRAUD_ASSETS_JAVA_HOME=auto uv run python -m fraud_assets.lib.spark_aot show

(`make spark-aot` runs the first.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fraud_assets.lib.jvm import AOT_MAJOR, Jdk, spark_jdk
from fraud_assets.lib.spark_session import local_config, spark_aot_cache
from fraud_assets.settings import AssetSettings


def record(jdk: Jdk, cache: Path, cards: int = 100_000, timeout: float = 900) -> float:
    """Write `cache` from a training run of the assets' Spark steps on a simulated day of about
    2 x `cards` transactions, in a fresh driver on `jdk`; returns the seconds it took.

    The JVM writes the cache as it exits; it lands under a temporary name and is moved into
    place, so a driver never starts from half a cache."""
    if not jdk.writes_aot_cache:
        raise ValueError(f"Java {jdk.version} ({jdk.home}) writes no AOT cache: needs {AOT_MAJOR}+")
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f".{cache.name}.{os.getpid()}")
    started = time.perf_counter()
    env = {**os.environ, "JAVA_HOME": str(jdk.home)}
    command = [
        sys.executable,
        "-m",
        "fraud_assets.lib.spark_aot",
        "_train",
        "--output",
        str(partial),
    ]
    command += ["--cards", str(cards)]
    log = cache.with_suffix(".log")  # Spark's and the JVM's output (the JVM's is long)
    try:
        with log.open("wb") as out:
            done = subprocess.run(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        if done.returncode != 0 or not partial.exists():
            what = f"exit {done.returncode}"
            raise RuntimeError(f"Java {jdk.version} wrote no AOT cache ({what}); see {log}")
        partial.replace(cache)
    finally:
        partial.unlink(missing_ok=True)
    return time.perf_counter() - started


def _train(output: Path, cards: int) -> None:
    """The training run `record` starts in a child process, so that its JVM is fresh and
    exits (writing the cache) before `record` returns."""
    import numpy as np
    from pyspark.sql import SparkSession

    from fraud_assets.lib.batch import featurize_days, score_days
    from fraud_core.features import DEFAULT_LABEL_DELAY_US, FEATURE_NAMES, empty_contract
    from fraud_data.simulator import SimulationConfig, generate
    from fraud_training.lightgbm_trainer import LightGBMParams, train_bundle

    # Any model exercises the same JVM code (Parquet, Arrow, the UDF's exchange): a small
    # one trained on noise keeps the run short.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, len(FEATURE_NAMES))).astype(np.float32)
    y = (rng.random(4000) < 0.1).astype(np.int64)
    bundle = train_bundle(
        x, y, x, y, contract=empty_contract(), params=LightGBMParams(n_estimators=10)
    ).bundle
    config = SimulationConfig(days=8, cards=cards, merchants=max(100, cards // 100), seed=7)
    with tempfile.TemporaryDirectory(prefix="fraudscale-aot-") as tmp:
        work = Path(tmp)
        generate(config, work / "raw")
        day = config.start + dt.timedelta(days=config.days - 1)
        # Always a local driver: the cache is for this machine's JVM, not a Connect server's.
        conf = {
            **local_config(AssetSettings.from_env()),
            "spark.driver.extraJavaOptions": f"-XX:AOTCacheOutput={output}",
        }
        session = SparkSession.builder.config(map=conf).getOrCreate()
        featurize_days(session, work / "raw", [day], work / "features", DEFAULT_LABEL_DELAY_US)
        score_days(session, work / "features", [day], bundle, work / "scored")
        process = session.sparkContext._gateway.proc  # type: ignore[union-attr]
        session.stop()
        # The gateway JVM exits when its stdin closes, and writes the cache as it exits.
        process.stdin.close()
        process.wait(timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("show", help="the JDK and AOT cache that Spark drivers get here")
    rec = commands.add_parser("record", help="write the AOT cache for the configured JDK")
    rec.add_argument("--force", action="store_true", help="replace an existing cache")
    train = commands.add_parser("_train")
    train.add_argument("--output", type=Path, required=True)
    train.add_argument("--cards", type=int, required=True)
    args = parser.parse_args()
    if args.command == "_train":
        _train(args.output, args.cards)
        return
    settings = AssetSettings.from_env()
    jdk = spark_jdk(settings.java_home)
    cache = spark_aot_cache(settings, jdk)
    if jdk is None:
        sys.exit("no Java found: install a JDK 17 or newer (Debian: openjdk-17-jre-headless)")
    print(f"Spark driver JDK: Java {jdk.version} at {jdk.home}")
    if cache is None:
        print(f"AOT cache: none (needs Java {AOT_MAJOR}+ and FRAUD_ASSETS_SPARK_AOT != off)")
        return
    if args.command == "record" and (args.force or not cache.exists()):
        seconds = record(jdk, cache)
        print(f"recorded {cache} ({cache.stat().st_size / 2**20:.0f} MiB) in {seconds:.0f} s")
    elif cache.exists():
        print(f"AOT cache: {cache} ({cache.stat().st_size / 2**20:.0f} MiB)")
    else:
        print(f"AOT cache: {cache} not recorded yet (make spark-aot)")


if __name__ == "__main__":
    main()
