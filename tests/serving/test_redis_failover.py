"""A Redis primary killed under REST load, behind Sentinels and in a cluster: no request
fails, answers are degraded only while the failover lasts and are counted, and states
written after the failover are read back."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
import urllib.request
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fraud_core.features import DEFAULT_LABEL_DELAY_US, arrow_columns, feature_matrix
from fraud_core.inference import Scorer
from fraud_core.model_store import ModelStore
from fraud_core.online_store import card_key, load_history
from fraud_core.state import replay
from fraud_devtools.processes import wait_until
from fraud_devtools.redis_server import LocalRedisCluster, LocalSentinel
from fraud_devtools.rest_server import running_server
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import Background
from tests.serving.test_online_state import wire
from tests.serving.test_rollout import metric

pytestmark = pytest.mark.integration


class Load(Background):
    """New transactions posted on `connections` keep-alive connections until stopped; each
    answer's send time, answer time, status and degraded flag."""

    def __init__(self, address: str, rows: list[dict], connections: int = 4) -> None:  # type: ignore[type-arg]
        self.address, self.rows = address, rows
        self.answers: list[tuple[float, float, int, bool]] = []
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._post, args=(n,), daemon=True) for n in range(connections)
        ]

    def _post(self, lane: int) -> None:
        host, port = self.address.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        for n in itertools.count(lane, len(self.threads)):
            if self.stopping.is_set():
                break
            row = self.rows[n % len(self.rows)]
            body = wire({**row, "transaction_id": f"load-{n}"})
            sent = time.monotonic()
            connection.request("POST", "/v1/score", body, {"content-type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            degraded = response.status == 200 and msgspec.json.decode(data)["features_degraded"]
            self.answers.append((sent, time.monotonic(), response.status, degraded))
        connection.close()

    def count(self) -> int:
        return len(self.answers)


def degraded_total(address: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return metric(response.read().decode(), "fraudscale_degraded_scores_total")


@pytest.mark.parametrize("kind", [LocalSentinel, LocalRedisCluster], ids=["sentinel", "cluster"])
def test_a_primary_killed_under_load_fails_no_request(
    kind: type[LocalSentinel | LocalRedisCluster], tmp_path: Path, trained, history: pa.Table
) -> None:  # type: ignore[no-untyped-def]
    redis = kind(tmp_path / "redis")
    redis.start()
    counts = pc.value_counts(history.column("card_id")).to_pylist()
    busiest = max(counts, key=lambda c: c["counts"])["values"]
    target = pc.indices_nonzero(pc.equal(history.column("card_id"), busiest)).to_pylist()[-1]
    before = history.slice(0, target)
    load_history(before, redis.url, DEFAULT_LABEL_DELAY_US)
    store = ModelStore(tmp_path / "models")
    store.publish(trained.bundle)
    settings = ServingSettings(
        model_store_dir=str(store.root), redis_url=redis.url, redis_timeout_ms=200,
        cache_enabled=False,
    )  # fmt: skip
    rows = history.slice(0, 2000).drop_columns(["is_fraud"]).to_pylist()
    try:
        with running_server(create_app(settings)) as address, Load(address, rows) as load:
            wait_until(lambda: load.count() > 200, "200 answers before the failure", 30)
            killed = time.monotonic()
            redis.kill_primary(card_key(busiest))
            redis.wait_for_failover()
            settled = time.monotonic()
            time.sleep(2.0)  # load after the failover
            load.stop()
            counted = degraded_total(address)
            # Written after the failover (to the promoted primary), read back by REST.
            load_history(before, redis.url, DEFAULT_LABEL_DELAY_US)
            row = history.slice(target, 1).to_pylist()[0]
            host, port = address.split(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.request("POST", "/v1/score", wire(row), {"content-type": "application/json"})
            body = msgspec.json.decode(connection.getresponse().read())
            connection.close()
    finally:
        redis.stop()
    answers = load.answers
    assert {status for _, _, status, _ in answers} == {200}
    degraded = [(sent, answered) for sent, answered, _, flag in answers if flag]
    assert degraded  # the failover was seen ...
    assert len(degraded) == counted  # ... and counted
    # ... and only while it lasted (a request sent just before the kill may meet it; the
    # clients reconnect within a second of the new primary's promotion).
    assert all(answered > killed for _, answered in degraded)
    assert all(sent < settled + 1.0 for sent, _ in degraded)
    assert any(sent > settled + 1.0 for sent, _, _, _ in answers)
    expected = Scorer(trained.bundle).score(
        feature_matrix(
            {**arrow_columns(history), **replay(history)}, trained.bundle.metadata.contract
        )[target : target + 1]
    )[0]
    assert body["features_degraded"] is False
    assert body["score"] == float(expected)
