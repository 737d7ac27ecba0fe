"""The JDK that Spark's driver runs on, and where that JDK's ahead-of-time cache lives.

A JDK 25 JVM can start from an AOT cache (JEPs 483, 514, 515: classes loaded and linked ahead
of time, plus the method profiles of a training run), written by one run of the same code on
the same JDK and pyspark jars (`fraud_assets.lib.spark_aot` records it). A cache that does not
match (another JDK build or classpath) is ignored with a warning, never an error.
"""

from __future__ import annotations

import os
import shutil
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
