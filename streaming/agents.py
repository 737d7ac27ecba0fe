"""The work: score transactions, fold labels into merchant risk, watch for new models.

Transactions arrive in lists straight from each fetch (`streaming.delivery`), at most
FRAUD_STREAM_BATCH_MAX at a time, and each list goes through one `Checkpoint` (score, produce
outputs and changelog, flush, acknowledge; Faust commits). Labels, a far smaller stream, come
through a Faust agent's `take_events` (waiting at most FRAUD_STREAM_BATCH_WAIT_MS); Faust
acknowledges them and flushes the producer before it commits. A crash loses no record, and a
record redelivered after a crash gets the score it got the first time without touching the
tables twice (`streaming.scoring`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import cast

import msgspec
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from faust.streams import Stream
from faust.transport.drivers.aiokafka import Producer as KafkaProducer
from faust.types import TP, EventT, StreamT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from fraud_core.online_store import queue_states
from fraud_core.scorer import Scorer
from fraud_core.state import CardState, MerchantState
from streaming import metrics
from streaming.app import app, models, settings
from streaming.checkpoint import Checkpoint
from streaming.delivery import Consumer
from streaming.outbox import Outbox
from streaming.scoring import (
    Alert,
    CardEntry,
    DeadLetter,
    Record,
    ScoredBatch,
    apply_labels,
    decode_card_entry,
    decode_merchant_entry,
    encode_entry,
    score_transactions,
)
from streaming.tables import card_to_state, merchant_to_risk, write_entry
from streaming.topics import (
    alerts_topic,
    dead_letters_topic,
    labels_topic,
    scores_topic,
    transactions_topic,
)

log = logging.getLogger("streaming")
_json = msgspec.json.Encoder()
_BATCH_WAIT = settings.batch_wait_ms / 1000
_SCORES = scores_topic.get_topic_name()
_ALERTS = alerts_topic.get_topic_name()
_DEAD_LETTERS = dead_letters_topic.get_topic_name()


def _records(events: Sequence[EventT]) -> list[Record]:
    return [Record.of(e.message) for e in events]


async def _send(outbox: Outbox) -> None:
    """Hand a batch's records to the Kafka producer (Faust flushes it before committing)."""
    await outbox.flush(_producer())


def _dead_letters(outbox: Outbox, dead: Sequence[DeadLetter]) -> None:
    for letter in dead:
        r = letter.record
        log.warning("dead letter from %s[%d]@%d: %s", r.topic, r.partition, r.offset, letter.error)
        outbox.add(_DEAD_LETTERS, r.key, r.value, headers=letter.headers())
        metrics.dead_letters.labels(
            r.topic, "malformed" if letter.error.malformed else "invalid"
        ).inc()


async def _published_model() -> Scorer:
    """The current champion; input waits (unacknowledged) until a valid one is published."""
    scorer = models.current
    while scorer is None:
        metrics.waiting_for_model.set(1)
        log.warning("no valid model in %s yet; holding input back", settings.model_store_dir)
        await asyncio.sleep(1.0)
        await _refresh_model()
        scorer = models.current
    metrics.waiting_for_model.set(0)
    return scorer


class OnlineStateWriter:
    """Writes changed states to Redis for the REST service, all of a batch in one pipeline.

    Redis is a read copy of the tables: when it is down, writes are skipped and counted for
    `retry_seconds` (the stream does not slow down), and cards touched later are written again.
    """

    def __init__(self, url: str, retry_seconds: float = 5.0) -> None:
        self.client = (
            aioredis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
            if url
            else None
        )
        self.retry_seconds = retry_seconds
        self._paused_until = 0.0

    async def write(self, cards: dict[str, CardState], merchants: dict[str, MerchantState]) -> None:
        if self.client is None or not (cards or merchants):
            return
        if time.monotonic() < self._paused_until:
            metrics.redis_errors.inc()
            return
        pipe = self.client.pipeline(transaction=False)
        queue_states(pipe, cards, merchants)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            metrics.redis_errors.inc()
            self._paused_until = time.monotonic() + self.retry_seconds
            log.warning("online state not written to Redis (retry in %gs): %s",
                        self.retry_seconds, exc)  # fmt: skip


online_state = OnlineStateWriter(settings.redis_url)


def _card_entry(card_id: str) -> CardEntry:
    return decode_card_entry(card_to_state.get(card_id.encode()))


def _merchant_state(merchant_id: str) -> MerchantState:
    return decode_merchant_entry(merchant_to_risk.get(merchant_id.encode())).state


app.batches.subscribe(transactions_topic)


def _producer() -> AIOKafkaProducer:
    return cast(KafkaProducer, app.producer)._ensure_producer()


checkpoint = Checkpoint(_producer, app.crash, kill_at=settings.kill_at)


def _transaction_outputs(batch: ScoredBatch) -> Outbox:
    """Scores, alerts, dead letters and the changed card entries, as one outbox."""
    outbox = Outbox()
    _dead_letters(outbox, batch.dead)
    for transaction, score in zip(batch.transactions, batch.scores, strict=True):
        key = transaction.transaction_id.encode()
        outbox.add(_SCORES, key, _json.encode(score))
        if score.decision == "alert":
            alert = Alert(transaction=transaction, score=score)
            outbox.add(_ALERTS, key, _json.encode(alert))
            metrics.alerts.inc()
    for card_id, (partition, entry) in batch.cards.items():
        write_entry(outbox, card_to_state, partition, card_id, encode_entry(entry))
    return outbox


def _applied_until(source: str, newest: dict[int, int]) -> None:
    for partition, ts_us in newest.items():
        metrics.applied_until.labels(source, str(partition)).set(ts_us / 1_000_000)


@app.task
async def transactions_to_scores() -> None:
    """Score every transaction; alerts and dead letters on the side; card state in the table."""
    await _outputs_declared.wait()
    source = transactions_topic.get_topic_name()
    consumer = cast(Consumer, app.consumer)

    def committed(partition: int) -> int:
        return consumer.committed_offset(TP(source, partition))

    async for messages in app.batches.batches(settings.batch_max):
        records = [Record.of(m) for m in messages]
        scorer = await _published_model()
        batch = await checkpoint.run(
            functools.partial(
                score_transactions,
                records,
                scorer,
                _card_entry,
                _merchant_state,
                committed=committed,
                reasons=settings.reasons,
            ),
            _transaction_outputs,
            functools.partial(app.batches.ack, messages),
        )
        await online_state.write({c: e.state for c, (_, e) in batch.cards.items()}, {})
        now = time.time()
        for message in messages:
            metrics.lag_seconds.observe(max(0.0, now - message.timestamp))
        metrics.transactions.inc(len(batch.scores))
        metrics.batch_size.observe(len(batch.scores))
        if batch.redelivered:
            remembered = batch.redelivered - batch.unremembered
            metrics.redelivered.labels("first").inc(remembered)
            metrics.redelivered.labels("state").inc(batch.unremembered)
        _applied_until("transactions", batch.newest)


@app.agent(labels_topic)
async def apply_labels_agent(stream: StreamT[bytes]) -> None:
    """Fold fraud labels into each merchant's risk state (read by every worker's scoring)."""
    async for events in cast(Stream[bytes], stream).take_events(
        settings.batch_max, within=_BATCH_WAIT
    ):
        batch = apply_labels(
            _records(events),
            lambda merchant_id: decode_merchant_entry(merchant_to_risk.get(merchant_id.encode())),
        )
        outbox = Outbox()
        _dead_letters(outbox, batch.dead)
        for merchant_id, (partition, entry) in batch.merchants.items():
            write_entry(outbox, merchant_to_risk, partition, merchant_id, encode_entry(entry))
        await _send(outbox)
        await online_state.write({}, {m: e.state for m, (_, e) in batch.merchants.items()})
        metrics.labels.inc(batch.labels)
        _applied_until("labels", batch.newest)


def _record_model() -> None:
    if models.current is not None:
        meta = models.current.metadata
        metrics.model.info({"name": meta.name, "version": meta.version})


async def _refresh_model() -> None:
    failures = models.load_failures
    if await asyncio.to_thread(models.refresh):
        _record_model()
    if models.load_failures > failures:
        metrics.model_load_failures.inc(models.load_failures - failures)


_record_model()  # the model app.py loaded at start-up


_outputs_declared = asyncio.Event()


@app.task
async def declare_output_topics() -> None:
    """Create the output topics before the agents produce (not left to broker auto-creation,
    which a production cluster usually turns off)."""
    for topic in (scores_topic, alerts_topic, dead_letters_topic):
        await topic.maybe_declare()
    _outputs_declared.set()


@app.timer(interval=settings.model_poll_seconds)
async def watch_published_model() -> None:
    """Swap to a newly published model between batches (a batch never mixes two models)."""
    await _refresh_model()


@app.page("/metrics")
class MetricsPage(View):
    async def get(self, request: Request) -> Response:
        source = transactions_topic.get_topic_name()
        owned = [tp for tp in app.consumer.assignment() if tp.topic == source]
        # Zero until the output topics exist too: "assigned" then means ready to work.
        metrics.assigned_partitions.set(len(owned) if _outputs_declared.is_set() else 0)
        # aiohttp takes the charset separately from the content type.
        content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return self.bytes(generate_latest(metrics.registry), content_type=content_type)
