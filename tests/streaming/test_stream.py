"""Stream workers on a real Kafka broker: parity with the reference, dead letters, crashes,
scale-out, broker restarts, shutdown and hot model swaps."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
from pathlib import Path

import msgspec
import numpy as np
import onnx
import pyarrow as pa
import pytest
import redis
from aiokafka import ConsumerRecord

from fraud_core.bundle import make_bundle
from fraud_core.features import arrow_columns, feature_matrix
from fraud_core.local import LocalRedis, wait_until
from fraud_core.model_store import ModelStore
from fraud_core.schema import LABELLED_SCHEMA
from fraud_core.scorer import Scorer
from fraud_core.scoring import Score
from fraud_core.state import CardState, card_key, decode_card_state, replay
from streaming.broker import LocalKafka
from streaming.local import consume, label_records, produce, transaction_records
from streaming.outbox import key_partition
from streaming.scoring import Alert, decode_card_entry
from tests.streaming.conftest import Stream

pytestmark = pytest.mark.integration


def send(stream: Stream, topic: str, records: list[tuple[bytes, bytes]]) -> int:
    return asyncio.run(produce(stream.bootstrap, stream.topic(topic), records))


def read(
    stream: Stream, topic: str, until: int, timeout: float = 90, distinct: bool = False
) -> list[ConsumerRecord]:
    return asyncio.run(
        consume(stream.bootstrap, topic, until=until, timeout=timeout, distinct_keys=distinct)
    )


def scores_by_id(records: list[ConsumerRecord]) -> dict[str, list[Score]]:
    """Every score per transaction_id (a redelivered transaction may appear twice)."""
    out: dict[str, list[Score]] = {}
    for record in records:
        score = msgspec.json.decode(record.value, type=Score)
        assert record.key == score.transaction_id.encode()
        out.setdefault(score.transaction_id, []).append(score)
    return out


def card_partition(card_id: str, partitions: int = 4) -> int:
    """The transactions topic partition a card's records go to."""
    return key_partition(card_id.encode(), partitions)


def reference_scores(table: pa.Table, scorer: Scorer) -> dict[str, float]:
    """What the batch path gives: replay features in time order, the same model."""
    x = feature_matrix({**arrow_columns(table), **replay(table)})
    return dict(
        zip(table.column("transaction_id").to_pylist(), scorer.score(x).tolist(), strict=True)
    )


def final_card_states(stream: Stream) -> dict[str, CardState]:
    """The card table as the changelog holds it: the last entry per card."""
    topic = f"{stream.env['FRAUD_STREAM_APP_ID']}-card_to_state-changelog"
    records = read(stream, topic, until=10**9, timeout=5)
    return {r.key.decode(): decode_card_entry(r.value).state for r in records}


def replayed_card_states(table: pa.Table) -> dict[str, CardState]:
    cards: dict[str, CardState] = {}
    replay(table.drop_columns(["is_fraud"]), cards)
    return cards


def wait_for_labels(worker, n: int) -> None:  # type: ignore[no-untyped-def]
    wait_until(lambda: worker.metric("fraudscale_stream_labels_total") >= n, "labels", 60)


def test_scores_equal_the_reference_and_tables_equal_a_replay(
    stream: Stream, models: ModelStore, redis_server: LocalRedis, history: pa.Table, trained
) -> None:  # type: ignore[no-untyped-def]
    """Labels first (merchant risk only counts labels known before each transaction's hour),
    then four days of transactions in time order: every score equals the batch path's, the
    card table and the Redis online state equal a replay, alerts are exactly the scores
    at or above the threshold."""
    table = history.slice(0, 12_000)
    worker = stream.worker(FRAUD_STREAM_REDIS_URL=redis_server.url)
    wait_for_labels(worker, send(stream, "labels", label_records(table)))
    n = send(stream, "transactions", transaction_records(table))

    scores = scores_by_id(read(stream, stream.topic("scores"), until=n))
    expected = reference_scores(table, Scorer(trained.bundle))
    assert scores.keys() == expected.keys()
    diffs = [abs(s[0].score - expected[tid]) for tid, s in scores.items()]
    assert max(diffs) <= 1e-6
    assert {s[0].model_version for s in scores.values()} == {trained.bundle.metadata.version}

    threshold = np.float32(trained.bundle.metadata.threshold)
    alerting = {tid for tid, s in scores.items() if s[0].score >= threshold}
    alerts = read(stream, stream.topic("alerts"), until=len(alerting), timeout=20)
    decoded = [msgspec.json.decode(a.value, type=Alert) for a in alerts]
    assert {a.transaction.transaction_id for a in decoded} == alerting
    assert all(len(a.score.reasons) == 3 for a in decoded)

    replayed = replayed_card_states(table)
    assert final_card_states(stream) == replayed
    online = redis.Redis.from_url(redis_server.url)
    sample = sorted(replayed)[:200]
    stored = online.mget([card_key(c) for c in sample])
    assert [decode_card_state(v) for v in stored] == [replayed[c] for c in sample]


def _scripted() -> pa.Table:
    """One card's transactions on window edges: exactly 1 h, 24 h and 7 d apart, a tie."""
    t0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    offsets = [
        dt.timedelta(0),
        dt.timedelta(hours=1),  # the first is exactly at the 1 h window's start: counted
        dt.timedelta(hours=1),  # same microsecond: the tie is not "earlier"
        dt.timedelta(hours=1, microseconds=1),
        dt.timedelta(hours=25),  # exactly 24 h after the second and third
        dt.timedelta(days=7, hours=1),  # 7 d after the second: it is still in the window
        dt.timedelta(days=7, hours=1, microseconds=1),
        dt.timedelta(days=8, hours=2),  # everything before day 1 has left the 7 d window
    ]
    rows = [
        {
            "transaction_id": f"s-{i}",
            "card_id": "card-edge",
            "merchant_id": f"m-{i % 3}",
            "merchant_category": "grocery",
            "amount": 10.0 * (i + 1),
            "currency": "EUR",
            "country": "DE" if i % 4 else "FR",
            "channel": "pos",
            "timestamp": t0 + offset,
            "is_fraud": i == 3,
        }
        for i, offset in enumerate(offsets)
    ]
    return pa.Table.from_pylist(rows, schema=LABELLED_SCHEMA)


def test_window_edges_of_a_scripted_card(stream: Stream, trained) -> None:  # type: ignore[no-untyped-def]
    table = _scripted()
    worker = stream.worker()
    wait_for_labels(worker, send(stream, "labels", label_records(table)))
    n = send(stream, "transactions", transaction_records(table))
    scores = scores_by_id(read(stream, stream.topic("scores"), until=n))
    expected = reference_scores(table, Scorer(trained.bundle))
    assert {tid: s[0].score for tid, s in scores.items()} == pytest.approx(expected, abs=1e-6)
    (state,) = final_card_states(stream).values()
    assert state == replayed_card_states(table)["card-edge"]
    assert len(state.ts) == 3  # only what is within 7 days of the last transaction is kept


def test_bad_records_go_to_the_dead_letter_topic_with_their_reason(
    stream: Stream, history: pa.Table
) -> None:
    good = transaction_records(history.slice(0, 5))
    valid = json.loads(good[0][1])
    bad: list[tuple[bytes, bytes]] = [
        (b"c1", b"{not json"),
        (b"c1", json.dumps({**valid, "card_id": "c1", "amount": -5}).encode()),
        (
            b"c1",
            json.dumps(
                {k: v for k, v in valid.items() if k != "merchant_id"} | {"card_id": "c1"}
            ).encode(),
        ),
        (b"someone-else", json.dumps({**valid, "transaction_id": "x-key"}).encode()),
    ]
    worker = stream.worker()
    send(stream, "transactions", bad[:2] + good + bad[2:])
    send(stream, "labels", [(b"m", b'{"transaction_id": "t"}')])

    dead = read(stream, stream.topic("dead-letters"), until=5)
    reasons = {}
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        reasons[record.value] = headers
        assert headers["source.topic"] in (stream.topic("transactions"), stream.topic("labels"))
        assert int(headers["source.offset"]) >= 0
    assert set(reasons) == {value for _, value in bad} | {b'{"transaction_id": "t"}'}
    assert reasons[b"{not json"]["error.kind"] == "malformed"
    assert reasons[bad[1][1]]["error.field"] == "amount"
    assert reasons[bad[2][1]]["error.field"] == "merchant_id"
    assert "required" in reasons[bad[2][1]]["error.reason"]
    assert reasons[bad[3][1]]["error.field"] == "card_id"
    assert "key" in reasons[bad[3][1]]["error.reason"]
    scores = scores_by_id(read(stream, stream.topic("scores"), until=5))
    assert set(scores) == {json.loads(v)["transaction_id"] for _, v in good}
    wait_until(
        lambda: 'fraudscale_stream_dead_letters_total{kind="invalid"' in (worker.metrics() or ""),
        "dead-letter metrics",
        10,
    )


def test_kill_9_mid_stream_loses_nothing_and_tables_equal_a_replay(
    stream: Stream, history: pa.Table, trained
) -> None:  # type: ignore[no-untyped-def]
    table = history.slice(0, 15_000).drop_columns(["is_fraud"])
    first = stream.worker()
    n = send(stream, "transactions", transaction_records(table))
    wait_until(lambda: first.metric("fraudscale_stream_transactions_total") >= 3000, "work", 60)
    first.kill()
    assert first.metric("fraudscale_stream_transactions_total") == 0  # it is gone
    stream.worker()

    scores = scores_by_id(read(stream, stream.topic("scores"), until=n, distinct=True))
    expected = reference_scores(table, Scorer(trained.bundle))
    assert scores.keys() == expected.keys()  # every transaction has a score
    for tid, answers in scores.items():  # a redelivered one is scored again, identically
        assert all(abs(a.score - expected[tid]) <= 1e-6 for a in answers)
    threshold = np.float32(trained.bundle.metadata.threshold)
    alerting = {tid for tid, s in expected.items() if np.float32(s) >= threshold}
    alerts = read(stream, stream.topic("alerts"), until=len(alerting), distinct=True)
    assert {a.key.decode() for a in alerts} == alerting  # no alert missing
    assert final_card_states(stream) == replayed_card_states(table.append_column(
        "is_fraud", pa.array([False] * table.num_rows)))  # fmt: skip


def test_two_workers_split_the_partitions_and_one_takes_over(
    stream: Stream, history: pa.Table, trained
) -> None:  # type: ignore[no-untyped-def]
    table = history.slice(0, 8000).drop_columns(["is_fraud"])
    records = transaction_records(table)
    a, b = stream.worker(), stream.worker()
    assert a.web_port != b.web_port
    wait_until(
        lambda: [w.metric("fraudscale_stream_assigned_partitions") for w in (a, b)] == [2, 2],
        "the group to split the four partitions",
        60,
    )
    send(stream, "transactions", records[:4000])
    wait_until(
        lambda: (
            a.metric("fraudscale_stream_transactions_total")
            + b.metric("fraudscale_stream_transactions_total")
            >= 4000
        ),
        "both workers",
        60,
    )
    assert a.metric("fraudscale_stream_transactions_total") > 0
    assert b.metric("fraudscale_stream_transactions_total") > 0
    b.kill()
    send(stream, "transactions", records[4000:])
    wait_until(
        lambda: a.metric("fraudscale_stream_assigned_partitions") == 4, "a to take over b's", 60
    )
    scores = scores_by_id(read(stream, stream.topic("scores"), until=8000, distinct=True))
    # a scored the rest with b's cards' state restored from the changelog: same scores
    expected = reference_scores(table, Scorer(trained.bundle))
    unscored = collections.Counter(
        card_partition(card)
        for tid, card in zip(
            table["transaction_id"].to_pylist(), table["card_id"].to_pylist(), strict=True
        )
        if tid not in scores
    )
    assert not unscored, f"transactions without a score, per input partition: {unscored}"
    assert scores.keys() == expected.keys()
    assert max(abs(s[0].score - expected[t]) for t, s in scores.items()) <= 1e-6


def test_broker_restart_then_sigterm_without_a_broker(
    tmp_path: Path, models: ModelStore, history: pa.Table
) -> None:
    broker = LocalKafka(tmp_path / "own-kafka")
    broker.start()
    try:
        stream = Stream(tmp_path, broker.bootstrap, models)
        stream.worker()
        records = transaction_records(history.slice(0, 4000))
        send(stream, "transactions", records[:2000])
        assert len(read(stream, stream.topic("scores"), until=2000)) >= 2000
        broker.stop()
        broker.start()
        send(stream, "transactions", records[2000:])
        scores = scores_by_id(read(stream, stream.topic("scores"), until=4000, distinct=True))
        assert len(scores) == 4000
        broker.kill()
        assert stream.workers[0].stop(timeout=60) < 15
    finally:
        broker.kill()
        stream.close()


def test_a_new_model_is_picked_up_mid_stream_without_loss(
    stream: Stream, models: ModelStore, history: pa.Table, trained
) -> None:  # type: ignore[no-untyped-def]
    records = transaction_records(history.slice(0, 6000))
    worker = stream.worker()
    send(stream, "transactions", records[:3000])
    wait_until(lambda: worker.metric("fraudscale_stream_transactions_total") >= 3000, "v1", 60)
    newer = msgspec.structs.replace(trained.bundle.metadata, version="2")
    models.publish(make_bundle(onnx.load_model_from_string(trained.bundle.onnx_bytes), newer))
    wait_until(lambda: 'version="2"' in (worker.metrics() or ""), "the new model", 10)
    send(stream, "transactions", records[3000:])
    scores = scores_by_id(read(stream, stream.topic("scores"), until=6000))
    assert len(scores) == 6000
    assert all(len(s) == 1 for s in scores.values())
    versions = [scores[json.loads(v)["transaction_id"]][0].model_version for _, v in records]
    assert versions == ["1"] * 3000 + ["2"] * 3000
