"""A standalone Spark cluster on this machine's loopback, from the pyspark package's own jars:
one master and its workers, each a `spark-class` JVM bound to 127.0.0.1, their web UIs off
the outward interface too. For tests and benchmarks of the nightly job on a cluster
(FRAUD_ASSETS_SPARK_MASTER=spark://127.0.0.1:<port>), as a deployment runs it.

    uv run python -m fraud_devtools.spark_cluster --workers 2    # until Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pyspark

from fraud_devtools.processes import (
    LocalProcess,
    free_port,
    start_process,
    stop_signals,
    unless_stopping,
    wait_stopped,
    wait_until,
)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def _env(folder: Path) -> dict[str, str]:
    home = Path(pyspark.__file__).parent
    return {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",  # bind and advertise loopback only
        "SPARK_LOG_DIR": str(folder),
        "SPARK_WORKER_DIR": str(folder / "work"),
        # Executors' Python workers run this interpreter (fraud_core, onnxruntime).
        "PYSPARK_PYTHON": sys.executable,
        # No REST submission server (it would take port 6066, beside any other cluster's).
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
    }


class LocalSparkCluster:
    """A master and `workers` workers of `cores` cores and `memory` each. `master_url` is
    what FRAUD_ASSETS_SPARK_MASTER takes; `kill_worker` kills one with SIGKILL."""

    def __init__(self, folder: Path, workers: int = 2, cores: int = 1, memory: str = "2g") -> None:
        self.folder, self.cores, self.memory = folder, cores, memory
        self.port, self.ui_port = free_port(), free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.master = LocalProcess()
        self.workers = [LocalProcess() for _ in range(workers)]
        self.worker_ui_ports = [free_port() for _ in range(workers)]

    def _class(self, name: str) -> list[str]:
        return [str(Path(pyspark.__file__).parent / "bin" / "spark-class"), name]

    def start(self, timeout: float = 120, stopping: threading.Event | None = None) -> None:
        """Start the master and the workers and wait until every worker has registered;
        SystemExit as soon as `stopping` is set meanwhile (`stop` ends what has started)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        env = _env(self.folder)
        self.master.process = start_process(
            [*self._class(MASTER_CLASS), "--host", "127.0.0.1", "--port", str(self.port),
             "--webui-port", str(self.ui_port)],
            "the Spark master", unless_stopping(lambda: self.state() is not None, stopping),
            timeout, log=self.folder / "master.log", env=env,
        )  # fmt: skip
        for n, worker in enumerate(self.workers):
            self._start_worker(n, worker, env, timeout)
        wait_until(
            unless_stopping(lambda: self.alive_workers() == len(self.workers), stopping),
            f"{len(self.workers)} Spark workers registered", timeout,
        )  # fmt: skip

    def _start_worker(
        self, n: int, worker: LocalProcess, env: dict[str, str], timeout: float
    ) -> None:
        work = self.folder / f"worker-{n}"
        work.mkdir(parents=True, exist_ok=True)
        worker.process = start_process(
            [*self._class(WORKER_CLASS), self.master_url, "--host", "127.0.0.1",
             "--cores", str(self.cores), "--memory", self.memory,
             "--webui-port", str(self.worker_ui_ports[n]), "--work-dir", str(work)],
            f"Spark worker {n}", lambda: True, timeout,
            log=self.folder / f"worker-{n}.log", env=env,
        )  # fmt: skip

    def state(self) -> dict[str, Any] | None:
        """The master's state (its web UI's JSON, on loopback), None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as r:
                state: dict[str, Any] = json.load(r)
                return state
        except (OSError, ValueError):  # not up yet, or its UI still starting
            return None

    def alive_workers(self) -> int:
        state = self.state() or {}
        return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")

    def tasks_started(self, n: int) -> int:
        """How many tasks the executors of worker `n` have started (from their logs)."""
        logs = (self.folder / f"worker-{n}").glob("app-*/*/stderr")
        return sum(path.read_text(errors="replace").count("Running task") for path in logs)

    def kill_worker(self, n: int) -> None:
        """SIGKILL worker `n` and the executors it started (they share its session)."""
        process = self.workers[n].process
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            self.workers[n].process = None

    def stop(self) -> None:
        for n in range(len(self.workers)):
            self.kill_worker(n)
        self.master.stop(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--memory", default="2g")
    parser.add_argument("--folder", type=Path, default=Path("data/spark-cluster"))
    args = parser.parse_args()
    stopping = stop_signals()
    cluster = LocalSparkCluster(args.folder, args.workers, args.cores, args.memory)
    try:
        cluster.start(stopping=stopping)
        print(f"Spark master at {cluster.master_url} (UI http://127.0.0.1:{cluster.ui_port}, "
              f"logs in {args.folder}); Ctrl-C stops it", flush=True)  # fmt: skip
        wait_stopped(lambda: cluster.master.process, stopping)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
