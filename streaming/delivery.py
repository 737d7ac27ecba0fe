"""Batch delivery: a topic's records go from each fetch straight to one queue, as lists.

Faust hands every record to its streams one at a time (a callback per record that waits on
two tasks, a channel queue, the stream iterator, `take_events`' buffer): ~100 us of event-loop
work per record, half a worker's CPU at a few thousand records/s. Here the fetch loop puts
the records of a *batch topic* into a `BatchQueue` as one list per fetch, and the consumer
acknowledges them with `BatchQueue.ack` once their outputs are with the producer.

Nothing fetched is dropped here. A queue emptied on rebalance (as Faust's stream buffers
are) would lose records whose offsets the fetch loop has already passed, e.g. a fetch that
lands during the seek to committed offsets after recovery; a first version of this module
did exactly that under kill -9 and restart. This queue keeps them instead:
- each record is tracked as unacknowledged when queued, and only acknowledged offsets are
  committed (Faust flushes the producer first);
- `batches` passes on only records of partitions the worker still owns; records of revoked
  partitions are let go unacknowledged, so the next owner reads them, and a revocation waits
  until the records already taken are acknowledged;
- a record fetched again after a seek is skipped if this worker already took it (its
  outputs went to the producer, which Faust flushes on revocation); scoring one twice would
  be harmless anyway: outputs are keyed by transaction_id and each table entry remembers
  the last offset applied to it.
Other topics (labels, table changelogs) take Faust's normal path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, Message, TopicT, TransportT
from mode import Service, ServiceT


class BatchQueue:
    """Lists of records fetched for the batch topics, taken by one consumer task."""

    def __init__(self, app: AppT, maxsize: int = 16) -> None:
        self.app = app
        self.topics: set[str] = set()
        self.queue: asyncio.Queue[list[Message]] = asyncio.Queue(maxsize)
        self._waiting: list[Message] = []  # the rest of a fetch larger than a batch
        self._done: dict[TP, int] = {}  # per partition, the last offset passed on

    def subscribe(self, topic: TopicT) -> None:
        """Fetch `topic` (acknowledged, committed) and deliver it here instead of to streams."""
        self.topics.update(topic.topics)
        self.app.topics.add(topic)

    async def batches(self, max_records: int) -> AsyncIterator[list[Message]]:
        """Yield lists of up to `max_records` records of partitions this worker owns: all
        that wait, or the next fetch."""
        queue = self.queue
        while True:
            if not self._waiting:
                self._waiting = await queue.get()
            while len(self._waiting) < max_records and not queue.empty():
                self._waiting.extend(queue.get_nowait())
            batch, self._waiting = self._waiting[:max_records], self._waiting[max_records:]
            owned = self.app.consumer.assignment()
            done = self._done
            for tp in [tp for tp in done if tp not in owned]:
                del done[tp]  # if it comes back, its records are new to this worker
            batch = [m for m in batch if m.tp in owned and m.offset > done.get(m.tp, -1)]
            for m in batch:
                done[m.tp] = m.offset
            if batch:
                yield batch

    def ack(self, messages: list[Message]) -> None:
        """The records' outputs are with the producer: their offsets may be committed."""
        ack = self.app.consumer.ack
        for message in messages:
            ack(message)


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with the fetch loop delivering batch topics as lists, and
    the offsets known to be committed.

    `committed_offset(tp)` is the offset a restarted worker would read `tp` from: what the
    broker returned when the partition was assigned, then each commit that succeeded. Faust's
    own `_committed_offset` also moves when a commit fails, so it cannot say what is safe to
    forget.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._durable: dict[TP, int] = {}

    def committed_offset(self, tp: TP) -> int:
        """The next offset of `tp` after the last commit known to have succeeded (0: none)."""
        return self._durable.get(tp, 0)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        offsets = await super().seek_to_committed()
        self._durable.update(
            {TP(tp.topic, tp.partition): o for tp, o in offsets.items() if o is not None and o > 0}
        )
        return offsets

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        done = await super()._commit(offsets)
        if done:
            self._durable.update(offsets)
        return done

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover
        # Faust's `Consumer._drain_messages` (faust-streaming 0.15), with the batch topics'
        # records collected per fetch instead of passed one by one to the conductor.
        batches = cast(App, self.app).batches
        batch_topics = batches.topics
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        track = self.track_message
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag("CONSUMER_FETCHING")
                ait = cast(AsyncIterator[Any], getmany(timeout=1.0))
                await self.sleep(0)
                fetched: list[Message] = []
                if not self.should_stop:
                    async for tp, message in ait:
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is not None and offset < r_offset:
                            continue  # already delivered (Faust drops these too)
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if message.topic in batch_topics:
                            track(message)
                            fetched.append(message)
                        else:
                            num_since_yield += 1
                            if num_since_yield > yield_every:
                                await asyncio.sleep(0)
                                num_since_yield = 0
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                if fetched:
                    await batches.queue.put(fetched)
                self.diag.unset_flag("CONSUMER_FETCHING")
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag("CONSUMER_FETCHING")


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[faust_aiokafka.Consumer]] = Consumer


class App(faust.App):
    """A Faust app whose consumer delivers the topics subscribed to `app.batches` in lists."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches = BatchQueue(self)

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)
