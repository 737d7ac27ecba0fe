"""A real Apache Kafka broker on loopback: single node, KRaft mode (broker and controller in one
JVM), from the jars Maven resolves out of Maven Central with fraud_devtools/kafka_jars/pom.xml.

    python -m fraud_devtools.kafka fetch     resolve the jars into .kafka/libs (once)
    python -m fraud_devtools.kafka up        start a broker on 127.0.0.1:9092 in the background
    python -m fraud_devtools.kafka down      stop it

Tests start their own on free ports through `LocalKafka`. Set KAFKA_BOOTSTRAP_SERVERS to use
an existing cluster instead; nothing here runs then.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from fraud_devtools.processes import (
    LocalProcess,
    free_port,
    port_answers,
    start_process,
    wait_until,
)

PROJECT = Path(__file__).resolve().parent.parent
POM = Path(__file__).resolve().parent / "kafka_jars" / "pom.xml"
KAFKA_HOME = Path(os.environ.get("FRAUD_KAFKA_HOME", PROJECT / ".kafka"))
"""Where the jars (libs/) and the `make kafka-up` broker's files (run/) live."""

JVM_OPTIONS = [
    "-Xms256m",
    "-Xmx1g",
    # ZGC pauses the broker for under a millisecond. G1's young collections paused it for
    # 15-35 ms about every 3.5 s at 1,000 records/s on a shared core, and every such pause
    # reached the stream benchmark's p99 (a broker elsewhere has cores for its GC threads).
    "-XX:+UseZGC",
    "-Djava.awt.headless=true",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dorg.slf4j.simpleLogger.log.kafka.server.KafkaServer=info",
    "-Dorg.slf4j.simpleLogger.log.kafka.server.BrokerServer=info",
]


def fetch_jars(home: Path = KAFKA_HOME) -> Path:
    """The folder of broker jars, resolved by Maven the first time (and when the pom changes)."""
    libs = home / "libs"
    stamp = libs / f".pom-{hashlib.sha256(POM.read_bytes()).hexdigest()[:16]}"
    if stamp.exists():
        return libs
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed to fetch the Kafka broker from Maven Central")
    if libs.exists():
        shutil.rmtree(libs)
    libs.mkdir(parents=True)
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        check=True,
    )  # fmt: skip
    stamp.touch()
    return libs


def broker_config(
    folder: Path, port: int, controller_port: int, partitions: int,
    node_id: int = 1, voters: str = "", replicas: int = 1,
) -> str:  # fmt: skip
    """A combined broker and controller. `voters` is the controller quorum (this node alone
    when empty); `replicas` the replication of the topics the brokers create themselves and
    of their internal ones, with `replicas - 1` in sync required for a write when above 1."""
    in_sync = max(1, replicas - 1)
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node_id}",
            f"controller.quorum.voters={voters or f'{node_id}@127.0.0.1:{controller_port}'}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={folder / 'data'}",
            f"num.partitions={partitions}",
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={in_sync}",
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=4",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={in_sync}",
            "transaction.state.log.num.partitions=4",
            # A consumer group starts at once instead of waiting for more members.
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "log.retention.hours=-1",
            "",
        ]
    )


class LocalKafka(LocalProcess):
    """One Kafka broker process with its config and log dir in `folder`.

    The first start formats the storage; later starts (a restart after `stop` or `kill`)
    reuse it, so topics and committed offsets survive a broker restart like on a real cluster.
    """

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        controller_port: int | None = None,
        partitions: int = 4,
    ) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.partitions = partitions
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.node_id, self.voters, self.replicas = 1, "", 1
        self.cluster_id = uuid.uuid4().hex[:22]
        """Set alike on every node of a cluster (LocalKafkaCluster)."""

    def _java(self, libs: Path, *args: str) -> list[str]:
        return ["java", *JVM_OPTIONS, "-cp", f"{libs}/*", *args]

    def start(self, timeout: float = 90, ready: Callable[[], bool] | None = None) -> None:
        """Start the node and wait until `ready` (default: it answers a metadata request)."""
        libs = fetch_jars()
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "server.properties"
        config.write_text(
            broker_config(
                self.folder, self.port, self.controller_port, self.partitions,
                self.node_id, self.voters, self.replicas,
            )
        )  # fmt: skip
        if not (self.folder / "data" / "meta.properties").exists():
            subprocess.run(
                self._java(libs, "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
                           "-c", str(config)),
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        self.process = start_process(
            self._java(libs, "kafka.Kafka", str(config)),
            f"the Kafka broker on {self.bootstrap}",
            ready or (lambda: broker_answers(self.bootstrap)),
            timeout,
            log=self.folder / "broker.log",
        )


class LocalKafkaCluster:
    """Three (`nodes`) Kafka nodes on loopback, each a broker and one of the controller
    quorum's voters, topics replicated `nodes` times with `nodes - 1` in sync required.
    `bootstrap` lists every broker; `kill` and `restart` one node."""

    def __init__(self, folder: Path, nodes: int = 3, partitions: int = 4) -> None:
        self.brokers = [
            LocalKafka(folder / f"node-{n}", partitions=partitions) for n in range(nodes)
        ]
        voters = ",".join(
            f"{n + 1}@127.0.0.1:{broker.controller_port}" for n, broker in enumerate(self.brokers)
        )
        for n, broker in enumerate(self.brokers):
            broker.node_id, broker.voters, broker.replicas = n + 1, voters, nodes
            broker.cluster_id = self.brokers[0].cluster_id
        self.bootstrap = ",".join(broker.bootstrap for broker in self.brokers)

    def start(self, timeout: float = 180) -> None:
        # Each node waits for a quorum of the others, so none is ready alone: start all, then
        # wait for each to answer.
        for broker in self.brokers:
            broker.start(timeout, ready=lambda: True)
        for broker in self.brokers:
            ready = functools.partial(broker_answers, broker.bootstrap)
            wait_until(ready, f"Kafka broker {broker.node_id} in its cluster", timeout)

    def kill(self, n: int) -> None:
        """SIGKILL node `n` (its data stays for a restart)."""
        self.brokers[n].kill()

    def restart(self, n: int, timeout: float = 120) -> None:
        self.brokers[n].start(timeout)

    def stop(self) -> None:
        for broker in self.brokers:
            broker.kill()


def broker_answers(bootstrap: str) -> bool:
    """True when the broker answers a metadata request."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not port_answers(host, int(port)):
        return False
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    async def probe() -> bool:
        client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await client.start()
            await client.describe_cluster()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            await client.close()

    return asyncio.run(probe())


# ---- make kafka-up / kafka-down: one broker in the background, its files in .kafka/run ----

RUN_DIR = KAFKA_HOME / "run"
PID_FILE = RUN_DIR / "broker.pid"


def up(port: int) -> None:
    if PID_FILE.exists():
        print(f"a broker is already running (pid {PID_FILE.read_text().strip()})")
        return
    broker = LocalKafka(RUN_DIR, port=port, controller_port=port + 1)
    broker.start()
    assert broker.process is not None
    PID_FILE.write_text(str(broker.process.pid))
    print(f"Kafka broker on {broker.bootstrap} (log: {RUN_DIR / 'broker.log'})")
    print(f"point the workers at it: export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}")


def down() -> None:
    if not PID_FILE.exists():
        print("no broker is running")
        return
    pid = int(PID_FILE.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    PID_FILE.unlink()
    print(f"stopped the Kafka broker (pid {pid})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fraud_devtools.kafka", description=__doc__)
    parser.add_argument("action", choices=["fetch", "up", "down"])
    parser.add_argument("--port", type=int, default=9092)
    args = parser.parse_args(argv)
    if args.action == "fetch":
        print(fetch_jars())
    elif args.action == "up":
        up(args.port)
    else:
        down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
