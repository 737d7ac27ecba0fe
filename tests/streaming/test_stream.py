"""Stream workers on a real Kafka broker: parity with the reference, dead letters, crashes,
scale-out, broker restarts, shutdown and hot model swaps."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import os
import signal
import threading
import time
from pathlib import Path

import msgspec
import numpy as np
import onnx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import redis
import rocksdict
from aiokafka import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from fraud_core.bundle import make_bundle
from fraud_core.features import DAY_US, arrow_columns, feature_matrix
from fraud_core.inference import Scorer
from fraud_core.model_store import ModelStore
from fraud_core.online_store import card_key
from fraud_core.outbox import key_partition
from fraud_core.schema import LABELLED_SCHEMA, from_micros, timestamps_us
from fraud_core.scoring import Score
from fraud_core.state import CardState, MerchantState, decode_card_state, end_states, replay
from fraud_devtools.kafka import LocalKafka
from fraud_devtools.processes import wait_until
from fraud_devtools.redis_server import LocalRedis
from fraud_devtools.stream_workers import (
    committed_and_held,
    consume,
    label_records,
    produce,
    transaction_records,
)
from streaming.scoring import Alert, decode_card_entry, decode_merchant_entry
from streaming.settings import CARD_TABLE, MERCHANT_TABLE, StreamSettings
from streaming.warm import TablesNotEmptyError, warm_start
from tests.conftest import relabelled, with_unknown_labels
from tests.streaming.conftest import Stream

pytestmark = pytest.mark.integration

FAULTS = Path(__file__).parent / "faults"
"""sitecustomize.py: faults for workers started with this folder on PYTHONPATH."""


def send(stream: Stream, topic: str, records: list[tuple[bytes, bytes]]) -> int:
    return asyncio.run(produce(stream.bootstrap, stream.topic(topic), records))


def read(
    stream: Stream,
    topic: str,
    until: int | None = None,
    timeout: float = 90,
    distinct: bool = False,
) -> list[ConsumerRecord]:
    """`until` records (or distinct keys) of `topic`, or with None all it holds now (call
    stream.settle() first when workers may still be writing it)."""
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
    x = feature_matrix({**arrow_columns(table), **replay(table)}, scorer.contract)
    return dict(
        zip(table.column("transaction_id").to_pylist(), scorer.score(x).tolist(), strict=True)
    )


def changelog_states(stream: Stream, table: str, decode):  # type: ignore[no-untyped-def]
    """A table as its changelog holds it once the group has settled: the last entry per key."""
    stream.settle()
    records = read(stream, StreamSettings.from_env(stream.env).changelog(table))
    return {r.key.decode(): decode(r.value).state for r in records}


def final_card_states(stream: Stream) -> dict[str, CardState]:
    """The card table as the changelog holds it: the last entry per card."""
    return changelog_states(stream, CARD_TABLE, decode_card_entry)  # type: ignore[no-any-return]


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


def test_a_warm_start_takes_the_champions_label_delay_and_skips_unknown_labels(
    stream: Stream, models: ModelStore, history: pa.Table, trained, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The champion was trained with labels known 7 days after their transactions; history
    has some labels unknown. The warm start's merchant states are the reference's for that
    delay, with unknown labels counted nowhere, and the stream then scores as the reference."""
    delay = 7 * DAY_US
    models.publish(relabelled(trained.bundle, delay))
    unknown = with_unknown_labels(history)
    landing = tmp_path / "landing-unknown"
    landing.mkdir()
    pq.write_table(unknown, landing / "history.parquet")
    ts = timestamps_us(unknown.column("timestamp"))
    until = (int(ts.min()) // DAY_US + 11) * DAY_US
    settings = StreamSettings.from_env({**stream.env, "FRAUD_STREAM_PARTITIONS": "4"})
    warm_start(settings, landing, until)
    cards, merchants = end_states(unknown, until, label_delay_us=delay)
    assert final_merchant_states(stream) == merchants
    assert final_card_states(stream) == cards

    worker = stream.worker()
    labels = label_records(unknown, since_us=until, label_delay_us=delay)
    wait_for_labels(worker, send(stream, "labels", labels))
    live = unknown.filter(pc.greater_equal(unknown.column("timestamp"), from_micros(until)))
    n = send(stream, "transactions", transaction_records(live))
    scores = scores_by_id(read(stream, stream.topic("scores"), until=n))
    scorer = Scorer(models.load_champion())
    columns = {**arrow_columns(unknown), **replay(unknown, label_delay_us=delay)}
    expected = dict(zip(unknown.column("transaction_id").to_pylist(),
                        scorer.score(feature_matrix(columns, scorer.contract)).tolist(),
                        strict=True))  # fmt: skip
    assert max(abs(s[0].score - expected[tid]) for tid, s in scores.items()) <= 1e-6


def _scripted() -> pa.Table:
    """One card's transactions on window edges: exactly 1 h, 24 h, 7 d and 30 d apart, a
    tie."""
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
        dt.timedelta(days=30, hours=1),  # 30 d after the second: still in the 30 d window
        dt.timedelta(days=38, hours=3),  # the first 8 days have left every window
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
    # Labels known by the last transaction, sent first. (A label known weeks after it would
    # move the merchant state's retention past labels the earlier transactions still count:
    # a live label stream arrives in time.)
    last = int(timestamps_us(table.column("timestamp")).max())
    wait_for_labels(worker, send(stream, "labels", label_records(table, until_us=last)))
    n = send(stream, "transactions", transaction_records(table))
    scores = scores_by_id(read(stream, stream.topic("scores"), until=n))
    expected = reference_scores(table, Scorer(trained.bundle))
    assert {tid: s[0].score for tid, s in scores.items()} == pytest.approx(expected, abs=1e-6)
    (state,) = final_card_states(stream).values()
    assert state == replayed_card_states(table)["card-edge"]
    assert len(state.ts) == 2  # only what is within 30 days of the last transaction is kept


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


def final_merchant_states(stream: Stream) -> dict[str, MerchantState]:
    return changelog_states(stream, MERCHANT_TABLE, decode_merchant_entry)  # type: ignore[no-any-return]


def test_a_source_topic_provisioned_after_the_group_formed_is_read_from_its_start(
    stream: Stream, history: pa.Table
) -> None:
    """The labels topic is not there when the worker joins (someone else provisions it,
    later): once it is, the group takes its partitions in a new generation, and every label,
    those produced before the worker owned the partitions too, is applied."""
    worker = stream.worker(
        provision=["transactions"],
        PYTHONPATH=os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])),
        FRAUD_TEST_UNDECLARED_TOPICS=stream.topic("labels"),
    )
    stream.provision(["labels"])
    wait_for_labels(worker, send(stream, "labels", label_records(history)))
    assert "Ignoring missing topic" in worker.log_path.read_text()  # it joined without it
    _, merchants = end_states(history)
    assert final_merchant_states(stream) == merchants


@pytest.mark.parametrize("waits", [True, False], ids=["waits-for-it", "joins-without-it"])
def test_a_changelog_the_cluster_shows_late_neither_stalls_the_group_nor_changes_a_score(
    stream: Stream, history: pa.Table, trained, waits: bool
) -> None:  # type: ignore[no-untyped-def]
    """The merchant table's changelog, which the worker creates, is not yet in the cluster's
    metadata when the worker would join its group (as on a cluster that shows a new topic
    late). Faust alone fails the assignment of a global table whose changelog it cannot see,
    and the group never forms. The worker waits for its changelogs before it joins; and a
    group that formed without one anyway (one broker showed it, the leader's did not) gives
    the table its partitions in the next generation. Either way it scores as the
    reference."""
    changelog = StreamSettings.from_env(stream.env).changelog(MERCHANT_TABLE)
    seen = "waiting for the topics" if waits else "Ignoring missing topic"

    def create_once_the_worker_misses_it() -> None:
        def missed() -> bool:
            return any(seen in p.read_text() for p in stream.folder.glob("worker-*.log"))

        wait_until(missed, f"'{seen}' in the worker's log", 60)
        time.sleep(1)
        stream.create([changelog], {"cleanup.policy": "compact"})

    late = threading.Thread(target=create_once_the_worker_misses_it)
    late.start()
    try:
        worker = stream.worker(
            PYTHONPATH=os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])),
            FRAUD_TEST_UNDECLARED_TOPICS=changelog,
            FRAUD_TEST_JOIN_WITHOUT_CHANGELOGS="0" if waits else "1",
        )
    finally:
        late.join()
    table = history.slice(0, 3_000)
    wait_for_labels(worker, send(stream, "labels", label_records(table)))
    n = send(stream, "transactions", transaction_records(table))
    scores = scores_by_id(read(stream, stream.topic("scores"), until=n))
    expected = reference_scores(table, Scorer(trained.bundle))
    assert {tid: s[0].score for tid, s in scores.items()} == pytest.approx(expected, abs=1e-6)
    log = worker.log_path.read_text()
    assert ("Ignoring missing topic" in log) is not waits
    _, merchants = end_states(table)
    assert final_merchant_states(stream) == merchants


KILL_POINTS = {
    "early": "score:1",  # the first batch scored, nothing produced
    "mid-batch": "produce:12",  # a batch's changelog with the producer, not yet with the broker
    "after-changelog-write": "changelog:12",  # the broker has its changelog, not its scores
    "kill-9-from-outside": "",  # at whatever point the worker is a third of the way through
}


@pytest.mark.parametrize(
    ("point", "store"),
    [(point, "memory") for point in KILL_POINTS]
    + [("after-changelog-write", "rocksdb"), ("kill-9-from-outside", "rocksdb")],
)
def test_kill_9_then_every_score_of_every_transaction_equals_the_reference(
    stream: Stream, long_history: pa.Table, trained, point: str, store: str
) -> None:  # type: ignore[no-untyped-def]
    """Thirty-three days (longer than the longest window, so card states are trimmed), labels
    first.
    The worker dies by SIGKILL at a point of a batch; another starts with the same group and
    data folder (with the RocksDB store, its databases: the entries the dead worker wrote
    there, changelog sent or not). Every transaction has a score, every score of every
    transaction (a redelivered one is scored twice) equals the batch path's, the scores the
    dead worker left past its committed offsets are each written once more, alerts are
    complete, and the card and merchant tables equal a replay of the input, in the
    changelogs and in the RocksDB store."""
    kill_at = KILL_POINTS[point]
    env = {"FRAUD_STREAM_KILL_AT": kill_at} if kill_at else {}
    env["FRAUD_STREAM_TABLE_STORE"] = store
    first = stream.worker(**env)
    wait_for_labels(first, send(stream, "labels", label_records(long_history)))
    n = send(stream, "transactions", transaction_records(long_history))
    if kill_at:
        wait_until(lambda: first.exit_code() is not None, "the worker's own SIGKILL", 120)
        assert first.exit_code() == -signal.SIGKILL
    else:
        wait_until(
            lambda: first.metric("fraudscale_stream_transactions_total") >= n // 3, "work", 120
        )
        first.kill()

    def left_behind() -> tuple[int, int]:
        return asyncio.run(
            committed_and_held(
                stream.bootstrap,
                stream.env["FRAUD_STREAM_APP_ID"],
                stream.topic("transactions"),
                stream.topic("scores"),
            )
        )

    # What the dead worker left, once the broker has written any request it had whole when
    # the worker died: the same twice, half a second apart.
    seen = [left_behind()]
    while len(seen) < 2 or seen[-1] != seen[-2]:
        assert len(seen) < 60, f"the dead worker's offsets still move: {seen[-3:]}"
        time.sleep(0.5)
        seen.append(left_behind())
    committed, held = seen[-1]
    second = stream.worker(
        FRAUD_STREAM_DATA_DIR=first.env["FRAUD_STREAM_DATA_DIR"], FRAUD_STREAM_TABLE_STORE=store
    )

    stream.settle()  # every transaction committed: each score and each copy is with the broker
    scores = scores_by_id(read(stream, stream.topic("scores")))
    expected = reference_scores(long_history, Scorer(trained.bundle))
    assert scores.keys() == expected.keys()  # every transaction has a score
    wrong = {
        tid: [a.score for a in answers]
        for tid, answers in scores.items()
        if any(abs(a.score - expected[tid]) > 1e-6 for a in answers)
    }
    assert not wrong, f"{len(wrong)} scored differently, e.g. {list(wrong.items())[:3]}"
    assert second.metric("fraudscale_stream_transactions_total") > 0  # the kill left work
    # Each score the dead worker wrote past its committed offsets is written again: one copy
    # each, no other. (The early kill comes before anything was produced; the changelog kill
    # leaves the twelfth batch's entries without its scores; a random moment may or may not
    # fall where scores are past the commits.)
    redelivered = sum(len(answers) > 1 for answers in scores.values())
    assert max(len(answers) for answers in scores.values()) <= 2
    assert redelivered == held - committed
    # A score with the broker is one whose entry the changelog has: its copy is counted.
    counted = second.metric('fraudscale_stream_redelivered_total{scored_from="first"}')
    assert redelivered <= counted
    if point == "after-changelog-write":
        assert counted > 0  # the twelfth batch's entries without its scores
    assert second.metric('fraudscale_stream_redelivered_total{scored_from="state"}') == 0
    threshold = np.float32(trained.bundle.metadata.threshold)
    alerting = {tid for tid, s in expected.items() if np.float32(s) >= threshold}
    alerts = read(stream, stream.topic("alerts"), until=len(alerting), distinct=True)
    assert {a.key.decode() for a in alerts} == alerting  # no alert missing, none extra
    cards, merchants = end_states(long_history)
    assert final_card_states(stream) == cards
    assert final_merchant_states(stream) == merchants
    if store == "rocksdb":
        second.stop()
        folder = Path(second.env["FRAUD_STREAM_DATA_DIR"])
        assert rocksdb_entries(folder, CARD_TABLE, decode_card_entry) == cards
        assert rocksdb_entries(folder, MERCHANT_TABLE, decode_merchant_entry) == merchants


def assert_each_scored_once(stream: Stream, n: int) -> None:
    """Once every transaction sent is committed, each of the `n` has exactly one score."""
    stream.settle()
    scores = scores_by_id(read(stream, stream.topic("scores")))
    assert len(scores) == n
    twice = sum(len(answers) > 1 for answers in scores.values())
    assert twice == 0, f"{twice} transactions scored twice"


def test_a_sigterm_mid_stream_leaves_nothing_to_score_again(
    stream: Stream, history: pa.Table
) -> None:
    """A rolling restart: the worker gets SIGTERM while it scores a backlog. It finishes what
    it has fetched (Faust's `stream_wait_empty`: every record queued is tracked until its
    batch is acknowledged) and commits it before it exits, so no score lies past the
    committed offsets and its successor scores every other transaction once, none twice."""
    first = stream.worker()
    n = send(stream, "transactions", transaction_records(history))
    wait_until(lambda: first.metric("fraudscale_stream_transactions_total") >= n // 4, "work", 120)
    assert first.stop(timeout=60) < 15
    committed, held = asyncio.run(
        committed_and_held(
            stream.bootstrap, stream.env["FRAUD_STREAM_APP_ID"], stream.topic("transactions"),
            stream.topic("scores"),
        )
    )  # fmt: skip
    assert committed < n  # stopped mid-stream
    assert held == committed, f"{held - committed} scores past the committed offsets"
    second = stream.worker(FRAUD_STREAM_DATA_DIR=first.env["FRAUD_STREAM_DATA_DIR"])
    assert_each_scored_once(stream, n)
    assert second.metric("fraudscale_stream_transactions_total") == n - committed


def test_a_rolling_restart_of_two_workers_scores_each_transaction_once(
    stream: Stream, history: pa.Table
) -> None:
    """Two workers share a backlog; one gets SIGTERM (its pod replaced) and the other takes its
    partitions over mid-backlog: every transaction has one score, none two."""
    a, b = stream.worker(), stream.worker()
    wait_until(
        lambda: [w.metric("fraudscale_stream_assigned_partitions") for w in (a, b)] == [2, 2],
        "the group to split the four partitions",
        60,
    )
    n = send(stream, "transactions", transaction_records(history))
    done = "fraudscale_stream_transactions_total"
    wait_until(lambda: a.metric(done) + b.metric(done) >= n // 4, "work", 120)
    assert b.stop(timeout=60) < 15
    assert_each_scored_once(stream, n)


def test_a_worker_joining_mid_backlog_scores_nothing_twice(
    stream: Stream, history: pa.Table
) -> None:
    """Scale-out: a second worker joins while the first scores a backlog; the partitions it
    takes over are committed where the first left them: every transaction has one score."""
    a = stream.worker()
    # The history three times over (later ids and days), so the newcomer's start-up lands
    # mid-backlog.
    copies = [
        history.set_column(
            history.schema.get_field_index("transaction_id"), "transaction_id",
            pc.binary_join_element_wise(history["transaction_id"], pa.scalar(f"-{k}"), ""),
        ).set_column(
            history.schema.get_field_index("timestamp"), "timestamp",
            pc.add(history["timestamp"], pa.scalar(k * 14 * DAY_US, pa.duration("us"))),
        )
        for k in range(3)
    ]  # fmt: skip
    n = send(stream, "transactions", transaction_records(pa.concat_tables(copies)))
    done = "fraudscale_stream_transactions_total"
    wait_until(lambda: a.metric(done) >= n // 10, "work", 120)
    b = stream.worker()
    assert_each_scored_once(stream, n)
    assert b.metric(done) > 0  # the newcomer took partitions over mid-backlog


def rocksdb_entries(folder: Path, table: str, decode) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """A table's states as a stopped worker's RocksDB store holds them (all partitions)."""
    out: dict[str, object] = {}
    paths = sorted(folder.rglob(f"{table}-*.db"))
    assert paths, f"no RocksDB database of {table} under {folder}"
    for path in paths:
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        try:
            out |= {
                k.decode(): decode(v).state for k, v in db.items() if not k.startswith(b"__faust")
            }
        finally:
            db.close()
    return out


def test_a_warm_start_scores_the_next_day_as_the_batch_path_does(
    stream: Stream, landing: Path, history: pa.Table, trained
) -> None:  # type: ignore[no-untyped-def]
    """Ten days of history go into the tables without a score; the labels known from then on
    and the last four days then stream: each of those transactions gets the batch path's
    score from its first event, and nothing of the history is scored or alerted."""
    ts = timestamps_us(history.column("timestamp"))
    until = (int(ts.min()) // DAY_US + 10) * DAY_US
    settings = StreamSettings.from_env({**stream.env, "FRAUD_STREAM_PARTITIONS": "4"})
    warmed = warm_start(settings, landing, until)
    live = history.filter(pc.greater_equal(history.column("timestamp"), from_micros(until)))
    assert warmed.rows == history.num_rows - live.num_rows
    cards, merchants = end_states(history, until)
    assert (warmed.cards, warmed.merchants) == (len(cards), len(merchants))
    assert sum(p.transactions for p in warmed.partitions.values()) == sum(
        len(c.ts) for c in cards.values()
    )
    assert max(p.newest_transaction_us for p in warmed.partitions.values()) < until
    with pytest.raises(TablesNotEmptyError):  # a second warm start would overwrite state
        warm_start(settings, landing, until)

    worker = stream.worker()
    wait_for_labels(worker, send(stream, "labels", label_records(history, since_us=until)))
    n = send(stream, "transactions", transaction_records(live))
    scores = scores_by_id(read(stream, stream.topic("scores"), until=n))
    expected = reference_scores(history, Scorer(trained.bundle))
    assert scores.keys() == set(live.column("transaction_id").to_pylist())
    assert max(abs(s[0].score - expected[tid]) for tid, s in scores.items()) <= 1e-6
    applied = {  # how far each partition's transactions and labels are applied
        (sample.labels["source"], sample.labels["partition"]): sample.value
        for family in text_string_to_metric_families(worker.metrics() or "")
        if family.name == "fraudscale_stream_applied_until_seconds"
        for sample in family.samples
    }
    newest = int(ts.max()) / 1e6
    assert max(v for (source, _), v in applied.items() if source == "transactions") == newest
    assert {p for source, p in applied if source == "transactions"} == {"0", "1", "2", "3"}
    assert {p for source, p in applied if source == "labels"} == {"0", "1", "2", "3"}
    assert final_card_states(stream) == end_states(history)[0]


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


def test_rebalances_count_every_transaction_scored_twice_and_outputs_stay_idempotent(
    stream: Stream, history: pa.Table, trained
) -> None:  # type: ignore[no-untyped-def]
    """Two workers share the partitions; one dies with work produced but not committed (its
    partitions move to the other), and a third joins mid-backlog (they move again). Every
    transaction is scored and its offset committed; every transaction the scores topic holds
    twice is counted by the survivors' redelivered metric, and its copies are the same score
    under the same key: a consumer keeping the last record per key sees one answer per
    transaction. (The metric also counts the transactions whose entries reached the
    changelog but whose scores were not sent yet when the worker died.)"""
    table = history.slice(0, 12000).drop_columns(["is_fraud"])
    doomed = stream.worker(FRAUD_STREAM_KILL_AT="flush:4")
    survivor = stream.worker()
    wait_until(
        lambda: [w.metric("fraudscale_stream_assigned_partitions") for w in (doomed, survivor)]
        == [2, 2],
        "the group to split the four partitions", 60,
    )  # fmt: skip
    n = send(stream, "transactions", transaction_records(table))
    wait_until(lambda: doomed.exit_code() is not None, "the worker's own SIGKILL", 120)
    joiner = stream.worker()  # a second rebalance, mid-backlog
    # Every offset is committed, those of partitions revoked and assigned straight back too
    # (their acknowledgements were forgotten): no copy is still to come.
    stream.settle()
    records = read(stream, stream.topic("scores"))  # copies too
    scores = scores_by_id(records)
    assert len(scores) == n
    duplicates = len(records) - len(scores)
    redelivered = 'fraudscale_stream_redelivered_total{scored_from="first"}'
    counted = sum(
        w.metric(redelivered) + w.metric(redelivered.replace("first", "state"))
        for w in (survivor, joiner)
    )
    assert duplicates <= counted
    assert duplicates > 0  # the kill left work in flight: the test tested something
    assert all(len({s.score for s in copies}) == 1 for copies in scores.values())
