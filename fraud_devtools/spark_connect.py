"""A Spark Connect server on this machine's loopback, from the pyspark package's own jars.

For a long-lived Spark next to the nightly runs (FRAUD_ASSETS_SPARK_REMOTE=sc://host:port),
for bench/batch and for the tests that run the assets' Spark code through Spark Connect.

    uv run python -m fraud_devtools.spark_connect --port 15002    # until Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import pyspark

from fraud_devtools.processes import (
    LocalProcess,
    free_port,
    port_answers,
    start_process,
    stop_signals,
    unless_stopping,
    wait_stopped,
)

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


class LocalSparkConnect(LocalProcess):
    """`spark-submit` of the Connect server (master and server settings from `conf`)."""

    def __init__(
        self, folder: Path, conf: Mapping[str, str], master: str, port: int | None = None
    ) -> None:
        self.folder, self.conf, self.master = folder, dict(conf), master
        self.port = port or free_port()
        self.url = f"sc://127.0.0.1:{self.port}"
        self.log_path = folder / f"spark-connect-{self.port}.log"

    def start(self, timeout: float = 120, stopping: threading.Event | None = None) -> None:
        """Start the server and wait until it answers; SystemExit (the JVM killed) as soon as
        `stopping` is set meanwhile."""
        self.folder.mkdir(parents=True, exist_ok=True)
        home = Path(pyspark.__file__).parent
        conf = {
            **self.conf,
            "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(self.port),
        }
        command = [str(home / "bin" / "spark-submit"), "--master", self.master]
        for key, value in conf.items():
            command += ["--conf", f"{key}={value}"]
        command += ["--class", SERVER_CLASS, "--name", "fraudscale Spark Connect", "spark-internal"]
        # Python UDFs run in this interpreter, which has fraud_core and onnxruntime.
        env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": sys.executable}
        self.process = start_process(
            command, f"the Spark Connect server on port {self.port}",
            unless_stopping(self._answers, stopping), timeout,
            log=self.log_path, env=env,
        )  # fmt: skip

    def _answers(self) -> bool:
        return port_answers("127.0.0.1", self.port)


def main() -> None:
    from fraud_assets.lib.spark_session import prepare_local_driver, server_config
    from fraud_assets.settings import AssetSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=15002)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--folder", type=Path, default=Path("data/spark-connect"))
    args = parser.parse_args()
    settings = AssetSettings.from_env()
    prepare_local_driver(settings)
    # The server JVM runs in its own session: a supervisor's SIGTERM must stop it too, as
    # Ctrl-C does, instead of leaving it behind.
    stopping = stop_signals()
    server = LocalSparkConnect(args.folder, server_config(settings), args.master, args.port)
    try:  # a signal during start-up or right after it still stops the JVM
        server.start(stopping=stopping)
        print(f"Spark Connect at {server.url} (log: {server.log_path}); Ctrl-C stops it",
              flush=True)  # fmt: skip
        wait_stopped(lambda: server.process, stopping)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
