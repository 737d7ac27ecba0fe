"""Shared fixtures: a small simulated history and a real model trained on it."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from fraud_core.bundle import ModelBundle, as_version, make_bundle
from fraud_core.features import (
    DEFAULT_LABEL_DELAY_US,
    DataContract,
    arrow_columns,
    feature_matrix,
)
from fraud_core.model_store import ModelStore
from fraud_core.rollout import CANARY, CHALLENGER
from fraud_core.state import replay
from fraud_data.landing import read_landing
from fraud_data.simulator import SimulationConfig, generate
from fraud_devtools.kafka import LocalKafka
from fraud_devtools.redis_server import LocalRedis, LocalRedisCluster, LocalSentinel

SAMPLE_TRANSACTION = {
    "transaction_id": "t-1",
    "card_id": "c-new",
    "merchant_id": "m-1",
    "merchant_category": "electronics",
    "amount": 1899.0,
    "currency": "EUR",
    "country": "BR",
    "channel": "ecom",
    "timestamp": "2026-01-20T03:12:00Z",
}
"""A valid wire transaction (a large online payment at night from a card with no history)."""

FAILED = pytest.StashKey[bool]()
"""Set on each test item once its body ran: whether it failed (for fixtures' teardown, which
then leave evidence: worker logs, screenshots)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


SMALL_WORLD = SimulationConfig(days=14, cards=1500, merchants=200, seed=11, fraud_intensity=3.0)


@pytest.fixture(scope="session")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two weeks of simulated labelled transactions in day folders."""
    root = tmp_path_factory.mktemp("landing")
    generate(SMALL_WORLD, root)
    return root


@pytest.fixture(scope="session")
def history(landing: Path) -> pa.Table:
    return read_landing(landing).sort_by("timestamp")


LONG_WORLD = SimulationConfig(days=33, cards=400, merchants=80, seed=5, fraud_intensity=3.0)
"""Longer than the longest card window (30 days), so card states are trimmed: fewer cards."""


@pytest.fixture(scope="session")
def long_history(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    root = tmp_path_factory.mktemp("long_landing")
    generate(LONG_WORLD, root)
    return read_landing(root).sort_by("timestamp")


def model_columns(table: pa.Table) -> dict[str, object]:
    """Raw columns + timestamp_us + reference stateful features, ready for feature_matrix."""
    return {**arrow_columns(table), **replay(table)}


def history_days(history: pa.Table) -> np.ndarray:
    """Each row's day index in the small world (0 = its first day)."""
    start = SMALL_WORLD.start
    return np.asarray([(d.date() - start).days for d in history.column("timestamp").to_pylist()])


@pytest.fixture(scope="session")
def contract(history: pa.Table) -> DataContract:
    """Vocabularies learnt on the training days (3-9), the default label delay."""
    from fraud_training.encoding import learn_contract

    days = history_days(history)
    return learn_contract(
        history.filter(pa.array((days >= 3) & (days < 10))), DEFAULT_LABEL_DELAY_US
    )


@pytest.fixture(scope="session")
def reference_features(history: pa.Table, contract: DataContract) -> np.ndarray:
    return feature_matrix(model_columns(history), contract)


def train_on_days(history: pa.Table, features: np.ndarray, contract: DataContract, **options):  # type: ignore[no-untyped-def]
    """A LightGBM bundle trained on days 3-9 and validated on days 10-13 of the small world
    (`options` go to train_bundle)."""
    from fraud_training.lightgbm_trainer import train_bundle

    day = history_days(history)
    labels = np.asarray(history.column("is_fraud"))
    train = (day >= 3) & (day < 10)
    valid = day >= 10
    return train_bundle(
        features[train], labels[train], features[valid], labels[valid], contract=contract,
        **options,
    )  # fmt: skip


@pytest.fixture(scope="session")
def trained(history: pa.Table, reference_features: np.ndarray, contract: DataContract):  # type: ignore[no-untyped-def]
    """A LightGBM bundle trained on days 3-9 and validated on days 10-13."""
    from fraud_training.lightgbm_trainer import LightGBMParams

    return train_on_days(
        history, reference_features, contract,
        params=LightGBMParams(n_estimators=60, min_child_samples=50),
    )  # fmt: skip


def with_unknown_labels(table: pa.Table, every: int = 7) -> pa.Table:
    """`table` with every `every`-th label unknown (null): history whose chargebacks are not
    all in."""
    labels = table.column("is_fraud").to_pylist()
    for i in range(0, len(labels), every):
        labels[i] = None
    index = table.column_names.index("is_fraud")
    return table.set_column(index, "is_fraud", pa.array(labels, pa.bool_()))


def relabelled(bundle: ModelBundle, label_delay_us: int) -> ModelBundle:
    """`bundle` as if trained with labels known `label_delay_us` after their transactions."""
    import onnx

    meta = bundle.metadata
    contract = msgspec.structs.replace(meta.contract, label_delay_us=label_delay_us)
    return make_bundle(
        onnx.load_model_from_string(bundle.onnx_bytes),
        msgspec.structs.replace(
            meta, contract=contract, version=f"{meta.version}-d{label_delay_us}"
        ),
    )


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[LocalRedis]:
    """A real Redis server (Debian's redis-server) on a free loopback port."""
    server = LocalRedis(tmp_path)
    server.start()
    yield server
    server.kill()


class Background:
    """Threads (`threads`, set by the subclass) that run until `stop`, started and stopped by
    `with`: load on a service while a test breaks something."""

    threads: list[threading.Thread]
    stopping: threading.Event

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)


RedisTopology = LocalRedis | LocalSentinel | LocalRedisCluster


@pytest.fixture(scope="session", params=["server", "sentinel", "cluster"])
def redis_topologies(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisTopology]:
    """One of each shape of Redis a deployment runs, started once for the session."""
    topology: RedisTopology = {
        "server": LocalRedis, "sentinel": LocalSentinel, "cluster": LocalRedisCluster,
    }[request.param](tmp_path_factory.mktemp(request.param))  # fmt: skip
    topology.start()
    yield topology
    if isinstance(topology, LocalRedis):
        topology.kill()
    else:
        topology.stop()


@pytest.fixture
def redis_topology(redis_topologies: RedisTopology) -> RedisTopology:
    """A real Redis of each shape a deployment runs, emptied for the test: one server; a
    primary and a replica behind three Sentinels; a cluster of three primaries with a
    replica each. Each has `url` (the setting the services take)."""
    from fraud_core.online_store import connect

    client = connect(redis_topologies.url)
    client.flushall()  # on a cluster, every primary
    client.close()
    return redis_topologies


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real broker started for the session (or the given cluster)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker.bootstrap
    broker.stop()


@pytest.fixture(scope="session")
def second_model(history: pa.Table, reference_features: np.ndarray, contract: DataContract):  # type: ignore[no-untyped-def]
    """Another LightGBM bundle (version "2", fewer trees, twice the alert rate) on the same
    days and contract: a candidate for the canary and challenger roles."""
    from fraud_training.lightgbm_trainer import ALERT_RATE, LightGBMParams

    return train_on_days(
        history, reference_features, contract, version="2",
        params=LightGBMParams(n_estimators=25, min_child_samples=80), alert_rate=2 * ALERT_RATE,
    )  # fmt: skip


CANARY_SHARE = 0.5


def rollout_store(root: Path, trained, second_model) -> ModelStore:  # type: ignore[no-untyped-def]
    """Champion "1", canary "2" on half the cards, challenger "3" (the canary's model under
    another version, so any leak of a shadow score shows as version 3)."""
    store = ModelStore(root)
    store.publish(trained.bundle)
    store.add(second_model.bundle)
    store.add(as_version(second_model.bundle, "3"))
    store.point_to("2", CANARY, share=CANARY_SHARE)
    store.point_to("3", CHALLENGER)
    return store
