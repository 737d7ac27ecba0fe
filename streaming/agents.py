"""The work: score transactions, fold labels into merchant risk, watch for new models.

Transactions arrive in lists straight from each fetch (`streaming.delivery`), at most
FRAUD_STREAM_BATCH_MAX at a time, and each list goes through one `Checkpoint` (score, produce
the changelog, the outputs once the broker has it, acknowledge; Faust commits). Labels, a far
smaller stream, come through a Faust agent's `take_events` (waiting at most
FRAUD_STREAM_BATCH_WAIT_MS); Faust acknowledges them and flushes the producer before it
commits. A crash loses no record, and a record redelivered after a crash gets the score it
got the first time without touching the tables twice (`streaming.scoring`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import cast

import msgspec
from faust.streams import Stream
from faust.types import TP, StreamT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fraud_core.model_store import ModelHolder, Served
from fraud_core.online_store import REDIS_FAULTS, connect_async, queue_states
from fraud_core.outbox import Outbox, track_topics
from fraud_core.rollout import SHADOW
from fraud_core.runtime import freeze_start_up_heap, report_native
from fraud_core.state import CardState, MerchantState
from streaming import metrics
from streaming.checkpoint import Checkpoint
from streaming.faust_overrides import App, Consumer, kafka_producer
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
    entry_risk,
    score_transactions,
)
from streaming.settings import StreamSettings
from streaming.tables import Tables, read_entry, write_entry
from streaming.topics import Topics

log = logging.getLogger("streaming")
_json = msgspec.json.Encoder()


class OnlineStateWriter:
    """Writes changed states to Redis for the REST service, all of a batch in one pipeline.

    Redis is a read copy of the tables: when it is down, writes are skipped and counted for
    `retry_seconds` (the stream does not slow down), and cards touched later are written again.
    """

    def __init__(self, url: str, retry_seconds: float = 5.0) -> None:
        self.client = connect_async(url, timeout=0.25) if url else None
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
        except REDIS_FAULTS as exc:
            metrics.redis_errors.inc()
            self._paused_until = time.monotonic() + self.retry_seconds
            log.warning("online state not written to Redis (retry in %gs): %s",
                        self.retry_seconds, exc)  # fmt: skip


class StreamWork:
    """A worker's agents, tasks, timer and /metrics page, registered on its app by `register`."""

    def __init__(
        self,
        app: App,
        settings: StreamSettings,
        topics: Topics,
        tables: Tables,
        models: ModelHolder,
    ) -> None:
        self.app, self.settings, self.topics, self.tables = app, settings, topics, tables
        self.models = models
        self.online_state = OnlineStateWriter(settings.redis_url)
        self.checkpoint = Checkpoint(
            functools.partial(kafka_producer, app), app.crash, kill_at=settings.kill_at
        )
        self.outputs_declared = asyncio.Event()
        self._scores = topics.scores.get_topic_name()
        self._alerts = topics.alerts.get_topic_name()
        self._dead_letters = topics.dead_letters.get_topic_name()
        self._decisions = topics.decisions.get_topic_name()

    def register(self) -> None:
        app = self.app
        app.batches.subscribe(self.topics.transactions)
        app.task(self.declare_output_topics)
        app.task(self.transactions_to_scores)
        app.agent(self.topics.labels, name="apply_labels")(self.apply_labels)
        app.timer(interval=self.settings.model_poll_seconds)(self.watch_published_model)
        app.page("/metrics")(self._metrics_page())
        self._record_model()

    async def declare_output_topics(self) -> None:
        """Create the output topics before the agents produce (not left to broker
        auto-creation, which a production cluster usually turns off), and have the producer
        know every topic it writes; start-up is then done and its heap is frozen."""
        for topic in self.topics.outputs:
            await topic.maybe_declare()
        produced = [
            *(t.get_topic_name() for t in self.topics.outputs),
            *sorted(self.app.tables.changelog_topics),
        ]
        await track_topics(kafka_producer(self.app), produced)
        report_native(log)
        freeze_start_up_heap()
        self.outputs_declared.set()

    async def transactions_to_scores(self) -> None:
        """Score every transaction; alerts and dead letters on the side; card state in the
        table."""
        await self.outputs_declared.wait()
        source = self.topics.transactions.get_topic_name()
        consumer = cast(Consumer, self.app.consumer)

        def committed(partition: int) -> int:
            return consumer.committed_offset(TP(source, partition))

        async for messages in self.app.batches.batches(self.settings.batch_max):
            records = [Record.of(m) for m in messages]
            served = await self._published_models()
            batch = await self.checkpoint.run(
                functools.partial(
                    score_transactions,
                    records,
                    served,
                    self._card_entry,
                    self._merchant_risk,
                    committed=committed,
                    reasons=self.settings.reasons,
                    decisions=self.settings.decision_log,
                    shadow_sample=self.settings.shadow_sample,
                ),
                self._card_changes,
                self._transaction_outputs,
                functools.partial(self.app.batches.ack, messages),
            )
            await self.online_state.write({c: e.state for c, (_, e) in batch.cards.items()}, {})
            now = time.time()
            for message in messages:
                metrics.lag_seconds.observe(max(0.0, now - message.timestamp))
            metrics.transactions.inc(len(batch.scores))
            self._count_roles(batch)
            metrics.batch_size.observe(len(batch.scores))
            if batch.redelivered:
                metrics.redelivered.labels("first").inc(batch.redelivered - batch.unremembered)
                metrics.redelivered.labels("state").inc(batch.unremembered)
            _applied_until("transactions", batch.newest)

    async def apply_labels(self, stream: StreamT[bytes]) -> None:
        """Fold fraud labels into each merchant's risk state (read by every worker's
        scoring)."""
        async for events in cast(Stream[bytes], stream).take_events(
            self.settings.batch_max, within=self.settings.batch_wait_ms / 1000
        ):
            batch = apply_labels(
                [Record.of(e.message) for e in events],
                lambda merchant_id: decode_merchant_entry(
                    read_entry(self.tables.merchant_to_risk, merchant_id)
                ),
            )
            outbox = Outbox()
            self._queue_dead_letters(outbox, batch.dead)
            for merchant_id, (partition, entry) in batch.merchants.items():
                write_entry(
                    outbox, self.tables.merchant_to_risk, partition, merchant_id,
                    encode_entry(entry),
                )  # fmt: skip
            await outbox.flush(kafka_producer(self.app))  # Faust flushes before it commits
            await self.online_state.write({}, {m: e.state for m, (_, e) in batch.merchants.items()})
            metrics.labels.inc(batch.labels)
            _applied_until("labels", batch.newest)

    async def watch_published_model(self) -> None:
        """Swap to a newly published model between batches (a batch never mixes two
        models)."""
        await self._refresh_model()

    def _card_entry(self, card_id: str) -> CardEntry:
        return decode_card_entry(read_entry(self.tables.card_to_state, card_id))

    def _merchant_risk(self, merchant_id: str, hour: int) -> list[float]:
        return entry_risk(read_entry(self.tables.merchant_to_risk, merchant_id), hour)

    def _card_changes(self, batch: ScoredBatch) -> Outbox:
        """The changed card entries (the changelog goes to the broker before the outputs)."""
        outbox = Outbox()
        for card_id, (partition, entry) in batch.cards.items():
            write_entry(outbox, self.tables.card_to_state, partition, card_id, encode_entry(entry))
        return outbox

    def _transaction_outputs(self, batch: ScoredBatch) -> Outbox:
        """Scores, alerts, dead letters and decision records, as one outbox."""
        outbox = Outbox()
        self._queue_dead_letters(outbox, batch.dead)
        for transaction, score in zip(batch.transactions, batch.scores, strict=True):
            key = transaction.transaction_id.encode()
            outbox.add(self._scores, key, _json.encode(score))
            if score.decision == "alert":
                alert = Alert(transaction=transaction, score=score)
                outbox.add(self._alerts, key, _json.encode(alert))
                metrics.alerts.inc()
        outbox.add_decisions(self._decisions, batch.decisions)
        return outbox

    def _queue_dead_letters(self, outbox: Outbox, dead: Sequence[DeadLetter]) -> None:
        for letter in dead:
            r = letter.record
            log.warning("dead letter from %s[%d]@%d: %s",
                        r.topic, r.partition, r.offset, letter.error)  # fmt: skip
            outbox.add(self._dead_letters, r.key, r.value, headers=letter.headers())
            kind = "malformed" if letter.error.malformed else "invalid"
            metrics.dead_letters.labels(r.topic, kind).inc()

    async def _published_models(self) -> Served:
        """The served models; input waits (unacknowledged) until a valid champion is
        published."""
        served = self.models.served
        while served is None:
            metrics.waiting_for_model.set(1)
            log.warning("no valid model in %s yet; holding input back",
                        self.settings.model_store_dir)  # fmt: skip
            await asyncio.sleep(1.0)
            await self._refresh_model()
            served = self.models.served
        metrics.waiting_for_model.set(0)
        return served

    def _count_roles(self, batch: ScoredBatch) -> None:
        counts: dict[tuple[str, str, str], int] = {}
        for score in batch.scores:
            key = (score.model_version, score.role, score.decision)
            counts[key] = counts.get(key, 0) + 1
        for shadow in batch.decisions:
            if shadow.part.role == SHADOW:
                version, alerts = shadow.part.scorer.version, shadow.part.alerts()
                for decision, n in (("alert", alerts), ("allow", shadow.size - alerts)):
                    key = (version, SHADOW, decision)
                    counts[key] = counts.get(key, 0) + n
        for (version, role, decision), n in counts.items():
            metrics.decisions.labels(version, role, decision).inc(n)

    async def _refresh_model(self) -> None:
        failures = self.models.load_failures
        if await asyncio.to_thread(self.models.refresh):
            self._record_model()
        if self.models.load_failures > failures:
            metrics.model_load_failures.inc(self.models.load_failures - failures)

    def _record_model(self) -> None:
        served = self.models.served
        if served is not None:
            meta = served.champion.metadata
            metrics.model.info({"name": meta.name, "version": meta.version})
            metrics.served.clear()
            for role, scorer in served.roles.items():
                metrics.served.labels(scorer.metadata.name, scorer.version, role).set(1)
            metrics.canary_share.set(served.canary_share if served.canary else 0.0)

    def _report_lag(self, owned: Sequence[TP]) -> None:
        """Each owned partition's records past its committed offset (the partitions this
        worker no longer owns are dropped: another worker reports them)."""
        consumer = cast(Consumer, self.app.consumer)
        metrics.consumer_lag.clear()
        for tp in owned:
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - consumer.committed_offset(tp))
                metrics.consumer_lag.labels(str(tp.partition)).set(lag)

    def _metrics_page(self) -> type[View]:
        work = self

        class MetricsPage(View):
            async def get(self, request: Request) -> Response:
                source = work.topics.transactions.get_topic_name()
                owned = [tp for tp in work.app.consumer.assignment() if tp.topic == source]
                # Zero until the output topics exist too: "assigned" then means ready to work.
                ready = work.outputs_declared.is_set()
                metrics.assigned_partitions.set(len(owned) if ready else 0)
                work._report_lag(owned)
                # aiohttp takes the charset separately from the content type.
                content_type = CONTENT_TYPE_LATEST.split(";")[0]
                return self.bytes(generate_latest(metrics.registry), content_type=content_type)

        return MetricsPage


def _applied_until(source: str, newest: dict[int, int]) -> None:
    for partition, ts_us in newest.items():
        metrics.applied_until.labels(source, str(partition)).set(ts_us / 1_000_000)
