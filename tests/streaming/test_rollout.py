"""Canary and shadow on the stream, and the decision log shared with REST: for the same
transaction history both paths log the same records (same ids, feature vectors and scores);
the challenger's scores reach the decision log only."""

from __future__ import annotations

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis
from litestar.testing import TestClient

from fraud_core.model_store import ModelStore
from fraud_core.online_store import STATE_KEY_PREFIX
from fraud_core.rollout import CANARY, CHAMPION, SHADOW, DecisionRecord, decode_decision, in_canary
from fraud_core.scoring import Score
from fraud_devtools.processes import wait_until
from fraud_devtools.redis_server import LocalRedis
from fraud_devtools.stream_workers import transaction_records
from serving.app import create_app
from serving.settings import ServingSettings
from streaming.scoring import Alert
from tests.conftest import CANARY_SHARE, rollout_store
from tests.streaming.conftest import Stream
from tests.streaming.test_stream import read, send

pytestmark = pytest.mark.integration


def once_per_card(table: pa.Table) -> pa.Table:
    """The first transaction of each card in `table` (so no transaction of it depends on
    another one in it)."""
    seen: set[str] = set()
    keep = []
    for card in table.column("card_id").to_pylist():
        keep.append(card not in seen)
        seen.add(card)
    return table.filter(pa.array(keep))


def test_rest_and_stream_log_the_same_decisions_and_shadow_scores_go_nowhere_else(
    stream: Stream, models: ModelStore, redis_server: LocalRedis, history: pa.Table,
    trained, second_model,
) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    rollout_store(models.root, trained, second_model)  # champion 1, canary 2, challenger 3
    before = history.slice(0, 1500).drop_columns(["is_fraud"])
    after = once_per_card(history.slice(1500, 600).drop_columns(["is_fraud"]))
    worker = stream.worker(FRAUD_STREAM_REDIS_URL=redis_server.url)
    n = send(stream, "transactions", transaction_records(before))
    read(stream, stream.topic("scores"), until=n)
    cards = len(pc.unique(before.column("card_id")))
    online = redis.Redis.from_url(redis_server.url)
    wait_until(
        lambda: len(online.keys(f"{STATE_KEY_PREFIX}:card:*")) >= cards,
        "the stream's card states in Redis", 30,
    )  # fmt: skip

    # REST scores the next transactions from the states the stream wrote, then the stream
    # scores the same transactions: one history, two paths, one decision topic.
    settings = ServingSettings(
        model_store_dir=str(models.root), redis_url=redis_server.url, redis_timeout_ms=500,
        decision_log_bootstrap=stream.bootstrap, decision_log_topic=stream.topic("decisions"),
        shadow_sample=1.0, cache_enabled=False,
    )  # fmt: skip
    wire = [{**row, "timestamp": row["timestamp"].isoformat()} for row in after.to_pylist()]
    with TestClient(create_app(settings)) as client:
        answers = client.post("/v1/score/batch", json={"transactions": wire}).json()["scores"]
        log = client.app.state.services.scoring.decision_log
        wait_until(lambda: log.delivered >= 2 * len(wire), "REST's decisions delivered", 30)
    m = send(stream, "transactions", transaction_records(after))
    total = 2 * (n + m) + 2 * len(wire)  # stream and REST, each a decision and a shadow one
    logged = [decode_decision(r.value) for r in read(stream, stream.topic("decisions"), total)]
    assert len(logged) == total

    by_path: dict[str, dict[tuple[str, str], DecisionRecord]] = {"rest": {}, "stream": {}}
    for record in logged:
        by_path[record.path][(record.transaction_id, record.role)] = record
    ids = set(after.column("transaction_id").to_pylist())
    rest = {k: r for k, r in by_path["rest"].items() if k[0] in ids}
    streamed = {k: r for k, r in by_path["stream"].items() if k[0] in ids}
    assert rest.keys() == streamed.keys()
    assert len(rest) == 2 * len(ids)
    for key, mine in rest.items():
        theirs = streamed[key]
        assert mine.decision_id == theirs.decision_id
        assert mine.features == theirs.features, key
        assert (mine.score, mine.decision, mine.model_version) == (
            theirs.score, theirs.decision, theirs.model_version
        )  # fmt: skip
    roles = {
        t: CANARY if in_canary(c, CANARY_SHARE) else CHAMPION
        for t, c in zip(
            after.column("transaction_id").to_pylist(), after.column("card_id").to_pylist(),
            strict=True,
        )
    }  # fmt: skip
    assert {a["transaction_id"]: a["role"] for a in answers} == roles
    assert {r.model_version for k, r in rest.items() if k[1] == SHADOW} == {"3"}

    # The stream's own outputs hold the answering roles only, never the challenger's.
    scores = [
        msgspec.json.decode(r.value, type=Score)
        for r in read(stream, stream.topic("scores"), n + m)
    ]
    assert {(s.role, s.model_version) for s in scores} == {(CHAMPION, "1"), (CANARY, "2")}
    assert all(s.role == roles[s.transaction_id] for s in scores if s.transaction_id in roles)
    stream.settle()
    alerts = read(stream, stream.topic("alerts"))
    versions = {msgspec.json.decode(a.value, type=Alert).score.model_version for a in alerts}
    assert versions <= {"1", "2"}
    assert (
        worker.metric(
            'fraudscale_stream_decisions_total{decision="allow",model_version="3",role="shadow"}'
        )
        > 0
    )
