"""Stream workers on the session's real Kafka broker (tests/conftest.py).

Each test gets its own topic prefix and consumer group, so tests share the broker without
seeing each other's records. KAFKA_BOOTSTRAP_SERVERS points the tests at an existing cluster.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from fraud_core.model_store import ModelStore
from fraud_devtools.stream_workers import LocalWorker, wait_for_group
from streaming.settings import StreamSettings
from streaming.topics import provision_topics
from tests.conftest import FAILED

_ids = itertools.count()


@pytest.fixture
def models(tmp_path: Path, trained) -> ModelStore:  # type: ignore[no-untyped-def]
    store = ModelStore(tmp_path / "models")
    store.publish(trained.bundle)
    return store


class Stream:
    """One test's topics and consumer group, and the workers started for it."""

    def __init__(self, folder: Path, bootstrap: str, models: ModelStore) -> None:
        self.folder = folder
        self.bootstrap = bootstrap
        self.prefix = f"t{os.getpid()}-{next(_ids)}"
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "FRAUD_STREAM_TOPIC_PREFIX": self.prefix,
            "FRAUD_STREAM_APP_ID": f"{self.prefix}-app",
            "FRAUD_STREAM_MODEL_STORE_DIR": str(models.root),
            "FRAUD_STREAM_MODEL_POLL_SECONDS": "0.2",
            "FRAUD_STREAM_SESSION_TIMEOUT_SECONDS": "6",
        }
        self.workers: list[LocalWorker] = []

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def settle(self, timeout: float = 90) -> None:
        """Wait until the group has committed every transaction sent: all its outputs and
        table changes are then with the broker, and reading a topic to its end reads them."""
        group = self.env["FRAUD_STREAM_APP_ID"]
        asyncio.run(wait_for_group(self.bootstrap, group, self.topic("transactions"), timeout))

    def worker(
        self, provision: Sequence[str] = ("transactions", "labels"), **env: str
    ) -> LocalWorker:
        """A started worker; before the first, the input topics named in `provision` are
        created (a deployment provisions them before it starts workers)."""
        if not self.workers:
            self.provision(provision, **env)
        worker = LocalWorker(self.folder, {**self.env, **env})
        self.workers.append(worker)  # one that fails to start still shows its log on failure
        worker.start()
        return worker

    def provision(self, names: Sequence[str], **env: str) -> None:
        """Create the topics `names` with the app's partitions, replication and min.insync, and
        wait until the cluster's metadata shows them."""
        self.create([self.topic(name) for name in names], **env)

    def create(
        self, topics: Sequence[str], config: Mapping[str, str] | None = None, **env: str
    ) -> None:
        """Create `topics` (full names) as `provision` does, with `config` besides the app's."""
        settings = StreamSettings.from_env({**self.env, **env})
        asyncio.run(
            provision_topics(
                self.bootstrap, topics, settings.partitions, settings.replication_factor,
                {**settings.topic_config(), **(config or {})},
            )
        )  # fmt: skip

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()


@pytest.fixture
def stream(
    request: pytest.FixtureRequest, tmp_path: Path, kafka: str, models: ModelStore
) -> Iterator[Stream]:
    s = Stream(tmp_path, kafka, models)
    yield s
    s.close()
    if request.node.stash.get(FAILED, False):
        for worker in s.workers:  # the workers' own account goes with the failure report
            print(f"--- {worker.log_path.name}: warnings, errors and rebalances ---")
            print(worker.log_digest())
