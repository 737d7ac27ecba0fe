"""Batch delivery: a topic's records go from each fetch straight to one queue, as lists.

Faust hands every record to its streams one at a time (a callback per record that waits on
two tasks, a channel queue, the stream iterator, `take_events`' buffer): event-loop work per
record that dominates a busy worker's CPU. Here the fetch loop
(`streaming.faust_overrides.Consumer`) puts the records of a *batch topic* into a `BatchQueue`
as one list per fetch, and the consumer acknowledges them with `BatchQueue.ack` once their
outputs are with the broker (streaming.checkpoint).

Nothing fetched is dropped here. A queue emptied on rebalance (as Faust's stream buffers
are) would lose records whose offsets the fetch loop has already passed, e.g. a fetch that
lands during the seek to committed offsets after recovery. This queue keeps them instead:
- each record is tracked as unacknowledged when queued, and only acknowledged offsets are
  committed (Faust flushes the producer first);
- `batches` passes on only records of partitions the worker still owns; records of revoked
  partitions are let go unacknowledged, so the next owner reads them, and a revocation waits
  until the records already taken are acknowledged;
- a record fetched again after a seek is skipped if this worker already took it (its
  outputs went to the producer, which Faust flushes on revocation); scoring one twice would
  be harmless anyway: outputs are keyed by transaction_id and each table entry remembers
  the last offset applied to it. The copy is acknowledged in its original's place (Faust
  forgets acknowledgements on revocation, so a partition revoked and assigned straight back
  would otherwise never be committed again): at once when the original was acknowledged,
  else when it is.
On a clean shutdown (`close`, called before Faust's final commit) the queue passes on no
more batches, waits until those passed on are acknowledged, and lets the records still queued
go unacknowledged; the worker then commits what `acknowledged` says, on the way down and on
every revocation: the next owner scores the rest, none twice.

Other topics (labels, table changelogs) take Faust's normal path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from faust.types import TP, AppT, Message, TopicT


class BatchQueue:
    """Lists of records fetched for the batch topics, taken by one consumer task."""

    def __init__(self, app: AppT, maxsize: int = 16) -> None:
        self.app = app
        self.topics: set[str] = set()
        self.queue: asyncio.Queue[list[Message]] = asyncio.Queue(maxsize)
        self._waiting: list[Message] = []  # the rest of a fetch larger than a batch
        self._done: dict[TP, int] = {}  # per partition, the last offset passed on
        self._acked: dict[TP, int] = {}  # per partition, the last offset acknowledged
        self._held: dict[TP, list[Message]] = {}  # copies waiting for their original's ack
        self._closed = False

    def subscribe(self, topic: TopicT) -> None:
        """Fetch `topic` (acknowledged, committed) and deliver it here instead of to streams."""
        self.topics.update(topic.topics)
        self.app.topics.add(topic)

    async def batches(self, max_records: int) -> AsyncIterator[list[Message]]:
        """Yield lists of up to `max_records` records of partitions this worker owns: all
        that wait, or the next fetch."""
        queue = self.queue
        while not self._closed:
            if not self._waiting:
                self._waiting = await queue.get()
                if self._closed:
                    return
            while len(self._waiting) < max_records and not queue.empty():
                self._waiting.extend(queue.get_nowait())
            batch, self._waiting = self._waiting[:max_records], self._waiting[max_records:]
            owned = self.app.consumer.assignment()
            done = self._done
            for tp in [tp for tp in done if tp not in owned]:
                del done[tp]  # if it comes back, its records are new to this worker
                self._acked.pop(tp, None)
                self._held.pop(tp, None)  # let go unacknowledged: the next owner reads them
            new = []
            for m in batch:
                if m.tp not in owned:
                    continue
                if m.offset > done.get(m.tp, -1):
                    done[m.tp] = m.offset
                    new.append(m)
                elif m.offset <= self._acked.get(m.tp, -1):
                    self.app.consumer.ack(m)  # taken and acknowledged before the seek
                else:
                    self._held.setdefault(m.tp, []).append(m)  # its original is in flight
            if new:
                yield new

    def ack(self, messages: list[Message]) -> None:
        """The records' outputs are with the producer: their offsets may be committed."""
        ack = self.app.consumer.ack
        acked = self._acked
        for message in messages:
            ack(message)
            acked[message.tp] = max(message.offset, acked.get(message.tp, -1))
        for tp, held in list(self._held.items()):
            through = acked.get(tp, -1)
            for copy in [m for m in held if m.offset <= through]:
                ack(copy)
            if not (rest := [m for m in held if m.offset > through]):
                del self._held[tp]
            else:
                self._held[tp] = rest

    def acknowledged(self) -> dict[TP, int]:
        """Per partition, the offset after the last record acknowledged: every record before
        it that this queue passed on is acknowledged (batches are acknowledged in order)."""
        return {tp: offset + 1 for tp, offset in self._acked.items()}

    def _settled(self) -> bool:
        """Every record passed on is acknowledged (the last offset passed on, per partition,
        against the last acknowledged; partitions let go on a revocation aside)."""
        acked = self._acked
        return all(acked.get(tp, -1) >= last for tp, last in self._done.items())

    async def close(self, timeout: float) -> int:
        """Pass on no more batches, wait up to `timeout` seconds until every record passed on
        is acknowledged, then let go of the records still queued: they stay unacknowledged
        and uncommitted, for the next owner. Returns how many were let go."""
        self._closed = True
        if self.queue.empty():
            self.queue.put_nowait([])  # wakes `batches` if it waits for the next fetch
        deadline = time.monotonic() + timeout
        while not self._settled() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        left, self._waiting = self._waiting, []
        while not self.queue.empty():
            left.extend(self.queue.get_nowait())
        for held in self._held.values():
            left.extend(held)
        self._held.clear()
        unacked = self.app.consumer.unacked
        for message in left:
            unacked.discard(message)
        return len(left)
