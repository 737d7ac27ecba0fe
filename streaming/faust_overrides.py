"""Every place fraudscale reaches into Faust's internals, in one module.

Derived from faust-streaming 0.15.3 (https://github.com/faust-streaming/faust), checked
against exactly that version: `CHECKED_VERSION` is compared with the installed one by
`check_faust_version` at start-up and by a test, so an upgrade fails loudly until this module
is reviewed against the new code.

- `Consumer._drain_messages` is Faust's own (faust/transport/consumer.py), with the records
  of batch topics collected per fetch instead of passed one by one to the conductor
  (streaming.delivery explains why).
- `Consumer.committed_offset` tracks what the broker confirmed, overriding `_commit` and
  `seek_to_committed` (Faust's `_committed_offset` also moves when a commit fails); the same
  `seek_to_committed` seeks partitions without a commit to their beginning.
- `Producer._settings_extra` makes Faust's producer idempotent with acks=all.
- `Conductor._update_indices` subscribes the consumer only once the cluster's metadata shows
  the tables' changelogs, and `PartitionAssignor._global_table_standby_assignments` assigns a
  global table whose changelog it cannot see no standbys instead of failing the assignment.
- `App` builds its transport with that consumer, producer and conductor, and uses that
  assignor; its `_consumer_wait_empty` (on a revocation and on the way down) closes the
  batch queue when stopping and then commits what the queue knows to be acknowledged,
  through Faust's `_commit_offsets` after `maybe_wait_for_commit_to_finish`.
  `kafka_producer` reaches the aiokafka producer under Faust's (`_ensure_producer`) for
  record batches (fraud_core.outbox).
- `set_table_entry` writes a table's store directly (`Collection.data`; in the RocksDB store
  the partition's database, `Store._db_for_partition`, and its key index) and names its
  changelog, for changelog records produced with a batch's outputs (streaming.tables);
  `get_table_entry` reads the RocksDB store below Faust's value decoding.
- `Worker` replaces the signal handlers (a deadline on shutdown) and drops the terminal
  spinner.

Portions copyright (c) 2017-2020, Robinhood Markets, Inc. All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are
permitted provided that the following conditions are met:
    * Redistributions of source code must retain the above copyright notice, this list of
      conditions and the following disclaimer.
    * Redistributions in binary form must reproduce the above copyright notice, this list
      of conditions and the following disclaimer in the documentation and/or other
      materials provided with the distribution.
    * Neither the name of Robinhood Markets, Inc. nor the names of its contributors may be
      used to endorse or promote products derived from this software without specific
      prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS
OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF
MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL
Robinhood Markets, Inc. OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF
SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION)
HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR
TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE,
EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, cast

import faust
import faust.assignor
import faust.transport.conductor
from aiokafka import AIOKafkaProducer
from faust.stores import rocksdb
from faust.tables.base import Collection
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, ConsumerT, Message, TableT, TransportT
from mode import Service, ServiceT

from streaming.delivery import BatchQueue
from streaming.topics import wait_for_topics

CHECKED_VERSION = "0.15.3"
"""The faust-streaming release this module was written against and reviewed for."""

log = logging.getLogger("streaming")


def check_faust_version() -> None:
    """RuntimeError unless the installed faust-streaming is `CHECKED_VERSION`."""
    installed = importlib.metadata.version("faust-streaming")
    if installed != CHECKED_VERSION:
        raise RuntimeError(
            f"faust-streaming {installed} is installed; streaming/faust_overrides.py was "
            f"checked against {CHECKED_VERSION}: review it against the new release first"
        )


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
        # aiokafka seeks only partitions with a commit above 0 and leaves the others where
        # its fetches left them. Faust drops the records of a fetch that returns during a
        # rebalance (a new generation), so a partition nobody has committed yet would then
        # be read on from past them: skipped, never scored nor committed. Those start from
        # the beginning, as a group's first read does (auto_offset_reset earliest).
        changelogs = self.app.tables.changelog_topics
        fresh = [
            tp for tp, o in offsets.items() if not (o and o > 0) and tp.topic not in changelogs
        ]
        if fresh:
            await self._thread.seek_to_beginning(*fresh)
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


class Producer(faust_aiokafka.Producer):
    """Faust's producer, idempotent with acks=all always (Faust asks for both only inside
    transactions): a send retried after a broker's death or a lost acknowledgement is not
    written twice, and an acknowledged one is on every in-sync replica."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class Conductor(faust.transport.conductor.Conductor):
    """Faust's conductor, subscribing the consumer only once the cluster's metadata shows
    every table's changelog.

    Faust creates the changelogs just before it subscribes, and a cluster can show a topic a
    moment after creating it. A group that forms without a global table's changelog never
    gets its assignment (Faust's assignor fails on it, and aiokafka then waits for the
    application to take the error, which a worker waiting for its partitions never does),
    and one without a partitioned table's changelog would score from state it has not read.
    """

    async def _update_indices(self) -> Any:
        index = await super()._update_indices()
        changelogs = sorted(self.app.tables.changelog_topics)
        bootstrap = ",".join(f"{url.host}:{url.port or 9092}" for url in self.app.conf.broker)

        def waiting(missing: list[str]) -> None:
            log.warning(
                "waiting for the topics %s to show in the cluster's metadata before joining "
                "the group",
                missing,
            )

        await wait_for_topics(bootstrap, changelogs, timeout=None, waiting=waiting)
        return index


class PartitionAssignor(faust.assignor.PartitionAssignor):
    """Faust's assignor, which assigns a global table no standby partitions while the
    cluster's metadata does not show its changelog, instead of failing the assignment (Faust
    looks the changelog's partition count up in the topics it found). The group's leader
    watches every subscribed topic's metadata, so the group rebalances as soon as the
    changelog shows, and the table then reads it."""

    def _global_table_standby_assignments(
        self, assignments: Any, partitions_by_topic: Mapping[str, int]
    ) -> Any:
        tables = self._table_manager.data.values()
        global_changelogs = {t._changelog_topic_name() for t in tables if t.is_global}
        if missing := sorted(global_changelogs.difference(partitions_by_topic)):
            log.warning("assigned without the changelogs %s: not in the metadata yet", missing)
        # A changelog of no partitions gets none.
        counts = {**dict.fromkeys(missing, 0), **partitions_by_topic}
        return super()._global_table_standby_assignments(assignments, counts)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[faust_aiokafka.Consumer]] = Consumer
    Producer: ClassVar[type[faust_aiokafka.Producer]] = Producer
    Conductor: ClassVar[type[faust.transport.conductor.Conductor]] = Conductor


class App(faust.App):
    """A Faust app whose consumer delivers the topics subscribed to `app.batches` in lists."""

    shutdown_seconds: float = 10.0
    """After SIGTERM/SIGINT, the longest a clean shutdown may take (the worker then exits)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, PartitionAssignor=PartitionAssignor, **kwargs)
        self.batches = BatchQueue(self)

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)

    async def _consumer_wait_empty(self, consumer: ConsumerT, logger: Any) -> None:
        # Faust calls this on a revocation, and before a stopping worker's final commit (its
        # fetcher stopped by then), to wait for the records taken to be acknowledged; then
        # it commits. That left transactions scored twice in tests: SIGTERM mid-backlog
        # (4,000-19,000 of 44,000 in about half of the runs; with a second worker taking
        # over, 3,100-4,600 in every run) and a worker joining mid-backlog (3,600-10,100 of
        # 131,000). Faust's wait ends at once when the consumer is stopping, so the batch
        # task went on scoring queued records after the final commit; and a commit is
        # skipped while a periodic one is under way, one of which was seen to leave a hole in
        # Faust's acknowledged lists that no later commit passes (committed 1,957 while every
        # offset to 3,090 was acknowledged, the list starting at 2,220). So a stopping worker
        # closes the batch queue first, and either way the worker then commits what the
        # queue knows to be acknowledged.
        if self.should_stop:
            released = await self.batches.close(self.shutdown_seconds / 2)
            logger.info("stopping: %d fetched records left for the next owner", released)
        await super()._consumer_wait_empty(consumer, logger)
        faust_consumer = cast(Consumer, consumer)
        await faust_consumer.maybe_wait_for_commit_to_finish()
        assigned = faust_consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self.batches.acknowledged().items()
            if tp in assigned and offset > faust_consumer.committed_offset(tp)
        }
        if offsets:
            await faust_consumer._commit_offsets(offsets)


def kafka_producer(app: AppT) -> AIOKafkaProducer:
    """The aiokafka producer under Faust's (started with the app)."""
    return cast(faust_aiokafka.Producer, app.producer)._ensure_producer()


def set_table_entry(table: TableT[bytes, bytes], key: bytes, value: bytes, partition: int) -> str:
    """Set `key` in the worker's store of `table`, without Faust's changelog write; returns
    the changelog topic the caller must produce the entry to, at `partition`.

    Faust's table writes go through a producer buffer that holds the consumer back in steps
    of 100 messages (a worker then stalls near 1,000 events/s). Its RocksDB store also takes
    the partition database from the current event, and a batch has none: the entry goes to
    `partition`'s database here, the one Faust restores that changelog partition into (and
    the key index its reads look in first)."""
    collection = cast(Collection, table)
    store = collection.data
    if isinstance(store, rocksdb.Store):
        store._db_for_partition(partition).put(key, value)
        store._key_index[key] = partition
    else:
        store[key] = value
    return str(collection.changelog_topic.get_topic_name())


def get_table_entry(table: TableT[bytes, bytes], key: bytes) -> bytes | None:
    """The value `set_table_entry` (or a changelog restore) put at `key`, as those bytes.

    Faust's table reads decode a disk store's values with the table's serializer (JSON for a
    bytes table); ours are MessagePack, written and restored raw, so the RocksDB store is read
    below its decoding (`Store._get`: the key index's partition first, else each database's
    bloom filter)."""
    store = cast(Collection, table).data
    if isinstance(store, rocksdb.Store):
        return store._get(key)
    return cast(bytes | None, store.get(key))


class Worker(faust.Worker):
    """Faust's worker with a deadline on shutdown (`App.shutdown_seconds`) and without the
    terminal spinner."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # Faust's terminal spinner sets the root logger to DEBUG whenever the level is WARN or
        # above, so every library debug call (aiokafka logs each send) builds a log record:
        # a share of a busy worker's CPU for nothing. A worker's output is a log, not a terminal.
        self.spinner = None
        super().on_setup_root_logger(logger, level)

    def _on_sigterm(self) -> None:
        _exit_after(cast(App, self.app).shutdown_seconds)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        _exit_after(cast(App, self.app).shutdown_seconds)
        super()._on_sigint()


def _exit_after(seconds: float) -> None:
    def deadline() -> None:
        time.sleep(seconds)
        log.error("clean shutdown took over %gs (broker unreachable?); exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=deadline, name="shutdown-deadline", daemon=True).start()
