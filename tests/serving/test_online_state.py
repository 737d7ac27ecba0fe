"""Online features from a real Redis: REST equals the reference path, and survives Redis dying."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis
from litestar.testing import TestClient

from fraud_core.features import DAY_US, DEFAULT_LABEL_DELAY_US, arrow_columns, feature_matrix
from fraud_core.inference import Scorer
from fraud_core.model_store import ModelStore
from fraud_core.online_store import CARD_STATE_TTL_MS, card_key, connect, load_history
from fraud_core.state import replay
from fraud_devtools.processes import wait_until
from fraud_devtools.redis_server import LocalRedis
from serving.app import create_app
from serving.cache import KEY_PREFIX
from serving.settings import ServingSettings
from tests.conftest import RedisTopology, relabelled, with_unknown_labels

pytestmark = pytest.mark.integration


def wire(row: dict) -> bytes:  # type: ignore[type-arg]
    return msgspec.json.encode({**row, "timestamp": row["timestamp"].isoformat()})


def client(tmp_path: Path, bundle, url: str) -> TestClient:  # type: ignore[no-untyped-def, type-arg]
    store = ModelStore(tmp_path / "models")
    store.publish(bundle)
    settings = ServingSettings(model_store_dir=str(store.root), redis_url=url, redis_timeout_ms=200)
    return TestClient(create_app(settings))


def test_rest_score_equals_the_reference_given_the_same_history(
    tmp_path: Path, redis_topology: RedisTopology, trained, history: pa.Table
) -> None:  # type: ignore[no-untyped-def]
    """On one server, behind Sentinels and on a cluster (where a batch's keys span slots)."""
    # The busiest card's last transaction, after all the history before it.
    counts = pc.value_counts(history.column("card_id")).to_pylist()
    busiest = max(counts, key=lambda c: c["counts"])["values"]
    rows = pc.indices_nonzero(pc.equal(history.column("card_id"), busiest)).to_pylist()
    target = rows[-1]
    row = history.slice(target, 1).to_pylist()[0]
    cards, merchants = load_history(
        history.slice(0, target), redis_topology.url, DEFAULT_LABEL_DELAY_US
    )
    assert cards > 100
    assert merchants > 10
    stored = connect(redis_topology.url)
    ttl_ms = stored.pttl(card_key(busiest))
    assert CARD_STATE_TTL_MS - 60_000 < ttl_ms <= CARD_STATE_TTL_MS  # every writer sets it
    expected = Scorer(trained.bundle).score(
        feature_matrix(
            {**arrow_columns(history), **replay(history)}, trained.bundle.metadata.contract
        )[target : target + 1]
    )[0]
    with client(tmp_path, trained.bundle, redis_topology.url) as rest:
        body = rest.post("/v1/score", content=wire(row)).json()
        retry = rest.post("/v1/score", content=wire(row)).json()
    assert body["features_degraded"] is False
    assert body["score"] == float(expected)
    assert (retry["cached"], retry["score"]) == (True, body["score"])
    # The score cache's writes reach Redis (a script on one server, a pipeline on a cluster).
    wait_until(
        lambda: any(True for _ in stored.scan_iter(match=KEY_PREFIX + "*")), "the L2 write", 5
    )


def test_rest_follows_the_models_label_delay_with_unknown_labels_in_history(
    tmp_path: Path, redis_server: LocalRedis, trained, history: pa.Table
) -> None:  # type: ignore[no-untyped-def]
    """States loaded from history whose labels are partly unknown, known 7 days after their
    transactions (the model's contract): REST scores as the reference does."""
    delay = 7 * DAY_US
    bundle = relabelled(trained.bundle, delay)
    unknown = with_unknown_labels(history)
    target = unknown.num_rows - 5
    load_history(
        unknown.slice(0, target), redis_server.url, bundle.metadata.contract.label_delay_us
    )
    columns = {**arrow_columns(unknown), **replay(unknown, label_delay_us=delay)}
    expected = Scorer(bundle).score(feature_matrix(columns, bundle.metadata.contract))
    with client(tmp_path, bundle, redis_server.url) as rest:
        for i in range(target, unknown.num_rows):
            row = unknown.slice(i, 1).to_pylist()[0]
            if any(
                r["card_id"] == row["card_id"]
                for r in unknown.slice(target, i - target).to_pylist()
            ):
                continue  # its card's state in Redis predates the rows before it here
            body = rest.post("/v1/score", content=wire(row)).json()
            assert body["score"] == float(expected[i])


def test_redis_dying_mid_load_fails_no_request_and_recovers(
    tmp_path: Path, redis_server: LocalRedis, trained, history: pa.Table
) -> None:  # type: ignore[no-untyped-def]
    rows = history.slice(0, 60).to_pylist()
    degraded = []
    with client(tmp_path, trained.bundle, redis_server.url) as rest:
        for i, row in enumerate(rows):
            if i == 20:
                redis_server.kill()
            if i == 40:
                redis_server.start()
            response = rest.post("/v1/score", content=wire(row))
            assert response.status_code == 200
            degraded.append(response.json()["features_degraded"])
        # Reconnection happens on the next request by itself; allow it a moment to succeed.
        wait_until(
            lambda: not rest.post("/v1/score", content=wire(rows[0])).json()["features_degraded"],
            "a request with Redis's state again", 5,
        )  # fmt: skip
    assert not any(degraded[:20])
    assert all(degraded[20:40])


def test_cache_serves_retries_never_across_model_versions(
    tmp_path: Path, redis_server: LocalRedis, trained, history: pa.Table
) -> None:  # type: ignore[no-untyped-def]
    import onnx

    from fraud_core.bundle import make_bundle
    from fraud_core.scoring import Score

    row = wire(history.slice(5, 1).to_pylist()[0])
    raw = redis.Redis.from_url(redis_server.url)
    store = ModelStore(tmp_path / "models")
    store.publish(trained.bundle)
    settings = ServingSettings(
        model_store_dir=str(store.root), redis_url=redis_server.url, model_poll_seconds=0.02
    )
    with TestClient(create_app(settings)) as first:
        fresh = first.post("/v1/score", content=row).json()
        retry = first.post("/v1/score", content=row).json()
        assert (fresh["cached"], retry["cached"]) == (False, True)
        assert retry["score"] == fresh["score"]
        wait_until(lambda: bool(raw.keys(KEY_PREFIX + "*")), "the L2 cache write", 5)
        (key,) = raw.keys(KEY_PREFIX + "*")
        assert msgspec.msgpack.decode(raw.get(key), type=Score).score == fresh["score"]
        assert 0 < raw.pttl(key) <= settings.cache_ttl_seconds * 1000

        model = onnx.load_model_from_string(trained.bundle.onnx_bytes)
        newer = msgspec.structs.replace(trained.bundle.metadata, version="2", threshold=0.9)
        store.publish(make_bundle(model, newer))
        answers = []

        def answered_by_v2() -> bool:
            answers.append(first.post("/v1/score", content=row).json())
            return bool(answers[-1]["model_version"] == "2")

        wait_until(answered_by_v2, "an answer from model 2", 10)
        answer = answers[-1]
        assert {a["model_version"] for a in answers} <= {"1", "2"}
        assert answer["cached"] is False
        assert answer["threshold"] == 0.9
    # Another process (empty L1) on the same Redis: L2 has the score, for the new model only.
    with TestClient(create_app(settings)) as second:
        again = second.post("/v1/score", content=row).json()
    assert (again["cached"], again["model_version"], again["threshold"]) == (True, "2", 0.9)
