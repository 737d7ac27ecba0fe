"""The JDK that Spark's driver runs on, and that JDK's ahead-of-time cache (JDK 25 and newer).

A JDK 25 JVM can start from an AOT cache (JEPs 483, 514, 515: classes loaded and linked ahead
of time, plus the method profiles of a training run), written by one run of the same code on
the same JDK and pyspark jars. `record` makes one by running the assets' Spark steps on a
small simulated day in a fresh JVM; later drivers on that JDK start from it. A cache that
does not match (another JDK build or classpath) is ignored with a warning, never an error.

    FRAUD_ASSETS_JAVA_HOME=auto uv run python -m fraud_assets.lib.jvm record    # make spark-aot
    FRAUD_ASSETS_JAVA_HOME=auto uv run python -m fraud_assets.lib.jvm show
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

JDK_ROOTS = (Path("/usr/lib/jvm"), Path("/usr/local/lib/jvm"), Path("/opt/java"))
"""Where `auto` looks for installed JDKs (Debian's packages and Temurin's install there)."""
MIN_MAJOR = 17
"""The oldest Java that pyspark 4 runs on."""
AOT_MAJOR = 25
"""The first Java with AOT caches that a JVM writes on exit (-XX:AOTCacheOutput)."""


@dataclass(frozen=True)
class Jdk:
    home: Path
    version: str
    """JAVA_VERSION from the JDK's `release` file, e.g. 25.0.3."""

    @classmethod
    def at(cls, home: Path) -> Jdk | None:
        """The JDK installed at `home`, or None when there is none (no `release` file)."""
        try:
            lines = (home / "release").read_text().splitlines()
        except OSError:
            return None
        fields = dict(line.split("=", 1) for line in lines if "=" in line)
        version = fields.get("JAVA_VERSION", "").strip('"')
        if not version or not (home / "bin" / "java").exists():
            return None
        return cls(home.resolve(), version)

    @property
    def major(self) -> int:
        head = self.version.split(".")[0]
        return int(head) if head.isdigit() else 0

    @property
    def writes_aot_cache(self) -> bool:
        return self.major >= AOT_MAJOR


def installed_jdks(roots: tuple[Path, ...] = JDK_ROOTS) -> list[Jdk]:
    """Every JDK Spark can run on under `roots`, newest first (one entry per installation)."""
    found = {
        jdk.home: jdk
        for root in roots
        if root.is_dir()
        for home in sorted(root.iterdir())
        if (jdk := Jdk.at(home)) is not None and jdk.major >= MIN_MAJOR
    }
    return sorted(found.values(), key=lambda jdk: _version_key(jdk.version), reverse=True)


def _version_key(version: str) -> tuple[int, ...]:
    parts = version.replace("+", ".").split(".")
    return tuple(int(part) if part.isdigit() else 0 for part in parts)


def default_jdk() -> Jdk | None:
    """What spark-submit runs without a setting: JAVA_HOME, else `java` on PATH."""
    if os.environ.get("JAVA_HOME"):
        return Jdk.at(Path(os.environ["JAVA_HOME"]))
    java = shutil.which("java")
    return Jdk.at(Path(java).resolve().parent.parent) if java else None


def spark_jdk(setting: str) -> Jdk | None:
    """The JDK for `setting` (FRAUD_ASSETS_JAVA_HOME): empty for `default_jdk`, `auto` for the
    newest installed one, else a JDK folder (ValueError naming it when it holds none)."""
    if not setting:
        return default_jdk()
    if setting == "auto":
        jdks = installed_jdks()
        return jdks[0] if jdks else default_jdk()
    jdk = Jdk.at(Path(setting))
    if jdk is None:
        raise ValueError(f"FRAUD_ASSETS_JAVA_HOME={setting} is not a JDK (no release/bin/java)")
    return jdk


def aot_cache_path(jdk: Jdk, folder: Path) -> Path:
    """One cache per JDK build and pyspark release: a cache only serves the JVM and jars that
    wrote it."""
    import pyspark

    return folder.resolve() / f"spark-driver-jdk{jdk.version}-pyspark{pyspark.__version__}.aot"


def driver_java_options(cache: Path | None) -> str:
    """The driver JVM options that start it from `cache` (its JDK's, or None for a JDK that
    has none) once that cache is recorded."""
    return f"-XX:AOTCache={cache}" if cache is not None and cache.exists() else ""


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
    command = [sys.executable, "-m", "fraud_assets.lib.jvm", "_train", "--output", str(partial)]
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

    from fraud_assets.defs.resources import local_config
    from fraud_assets.lib.batch import featurize_days, score_days
    from fraud_core.features import FEATURE_NAMES
    from fraud_core.simulator import SimulationConfig, generate
    from fraud_core.training import LightGBMParams, train_bundle

    # Any model exercises the same JVM code (Parquet, Arrow, the UDF's exchange): a small
    # one trained on noise keeps the run short.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, len(FEATURE_NAMES))).astype(np.float32)
    y = (rng.random(4000) < 0.1).astype(np.int64)
    bundle = train_bundle(x, y, x, y, params=LightGBMParams(n_estimators=10)).bundle
    config = SimulationConfig(days=8, cards=cards, merchants=max(100, cards // 100), seed=7)
    with tempfile.TemporaryDirectory(prefix="fraudscale-aot-") as tmp:
        work = Path(tmp)
        generate(config, work / "raw")
        day = config.start + dt.timedelta(days=config.days - 1)
        # Always a local driver: the cache is for this machine's JVM, not a Connect server's.
        conf = {**local_config(), "spark.driver.extraJavaOptions": f"-XX:AOTCacheOutput={output}"}
        session = SparkSession.builder.config(map=conf).getOrCreate()
        featurize_days(session, work / "raw", [day], work / "features")
        score_days(session, work / "features", [day], bundle, work / "scored")
        process = session.sparkContext._gateway.proc  # type: ignore[union-attr]
        session.stop()
        # The gateway JVM exits when its stdin closes, and writes the cache as it exits.
        process.stdin.close()
        process.wait(timeout=600)


def main() -> None:
    from fraud_assets.defs.resources import spark_aot_cache, spark_jdk_setting

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
    jdk = spark_jdk(spark_jdk_setting())
    cache = spark_aot_cache(jdk)
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
