"""The REST service's decision log: every decision to `<prefix>.decisions` in Kafka, through a
bounded in-process queue that never blocks a response.

`offer` queues a micro-batch's decisions (`DecisionBatch`es: each role's scores, not yet
records) when they fit in the queue and drops (and counts) them when not: when the broker is
slow or gone, the queue fills and decisions are dropped, never buffered until the process
runs out of memory (KServe's logger, kserve#6167). One task sends what is queued: it starts
the producer (again and again while the broker is absent), makes the records and their JSON
for hundreds of decisions at a time (a tenth of a second's worth: made per micro-batch on the
path that answers requests, they cost the server twice the CPU), straight into one compiled
buffer and from it into record batches per partition (fraud_core.outbox: no Python object
a message; one send per partition, not per record), hands those to aiokafka
and waits for their delivery, so aiokafka holds at most one send's worth.
Records that aiokafka could not deliver are dropped and counted as well, and so are
decisions whose records could not be made (a bug: logged with its traceback, and the sender
carries on with the next). The service keeps serving without Kafka and says so in its
readiness details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from fraud_core.outbox import RECORD_BATCH_BYTES, DecisionMessages, Outbox

log = logging.getLogger(__name__)
SEND_BATCH = 1000


class Decisions(DecisionMessages, Protocol):
    """Decisions as queued: `size` of them, made into the topic's messages by the sender
    (fraud_core.scoring.DecisionBatch)."""

    @property
    def size(self) -> int: ...


class DecisionLog:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        capacity: int = 10_000,
        retry_seconds: float = 2.0,
        delivery_timeout_ms: int = 5_000,
        linger_seconds: float = 0.1,
        on_lag: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        """`on_lag` is told the delivery lag (seconds from offer to acknowledgement) of a
        sample of each send's records (the metrics' histogram)."""
        self.bootstrap, self.topic, self.capacity = bootstrap, topic, capacity
        self.retry_seconds, self.delivery_timeout_ms = retry_seconds, delivery_timeout_ms
        self.linger_seconds = linger_seconds
        """How long the sender lets decisions gather before a send: a produce request (and its
        acknowledgement) per micro-batch would cost the server more than the decisions."""
        self.queue: deque[tuple[float, Decisions]] = deque()
        self.queued = 0
        """Decisions in the queue (its batches' sizes)."""
        self.dropped = {"queue_full": 0, "delivery_failed": 0, "record_failed": 0}
        self.offered = 0
        self.delivered = 0
        self.in_flight = 0
        """Taken from the queue and handed to aiokafka, not yet acknowledged or failed."""
        self.connected = False
        self.last_error = ""
        self.on_lag = on_lag
        self._sent_at = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None

    def offer(self, batches: Sequence[Decisions]) -> None:
        """Queue each batch that fits; drop and count the others. Never waits."""
        now = time.monotonic()
        for batch in batches:
            size = batch.size
            self.offered += size
            if self.queued + size > self.capacity:
                self.dropped["queue_full"] += size
                continue
            self.queue.append((now, batch))
            self.queued += size
        self._wake.set()

    def status(self, stall_seconds: float = 1.0) -> str:
        """ "connected", or why decisions are not reaching Kafka now."""
        if not self.connected:
            return f"unavailable, decisions dropped: {self.last_error or 'connecting'}"
        waited = time.monotonic() - self._sent_at
        if self.in_flight and waited > stall_seconds:
            return f"stalled: no acknowledgement from Kafka for {waited:.1f}s"
        return "connected"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="decision-log")

    async def close(self, drain_seconds: float = 2.0) -> None:
        """Send what is queued and in flight (for at most `drain_seconds`), then stop. A sender
        still making its first connection (a new topic being created) is waited for too; one
        that found Kafka down is not."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_seconds):
                while (self.queue or self.in_flight) and (self.connected or not self.last_error):
                    await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._stop_producer()

    async def _run(self) -> None:
        while True:
            if self._producer is None and not await self._start_producer():
                await asyncio.sleep(self.retry_seconds)
                continue
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
            if self.queued < SEND_BATCH:
                await asyncio.sleep(self.linger_seconds)
            await self._send_some()

    async def _start_producer(self) -> bool:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            # On a replicated cluster a decision is acknowledged once every in-sync replica
            # has it, and a retried send is not written twice; the wait is the sender's, never
            # a response's.
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=RECORD_BATCH_BYTES,
            request_timeout_ms=self.delivery_timeout_ms,
            client_id="fraudscale-serving-decisions",
        )
        try:
            await producer.start()
            # The topic's partitions (created by the broker here if it creates topics itself):
            # "connected" means records can go out now.
            async with asyncio.timeout(self.delivery_timeout_ms / 1000):
                await producer.partitions_for(self.topic)
        except (KafkaError, OSError, TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            if isinstance(exc, asyncio.CancelledError):  # closed while connecting
                raise
            self._note_down(exc)
            return False
        self._producer, self.connected = producer, True
        log.info("decision log connected to %s (topic %s)", self.bootstrap, self.topic)
        return True

    async def _send_some(self) -> None:
        assert self._producer is not None
        taken: list[tuple[float, Decisions]] = []
        count = 0
        while self.queue and count < SEND_BATCH:
            taken.append(self.queue.popleft())
            count += taken[-1][1].size
        self.queued -= count
        self.in_flight, self._sent_at = count, time.monotonic()
        outbox = Outbox()
        try:
            outbox.add_decisions(self.topic, [batch for _, batch in taken])
        except Exception:  # a bug of ours: these decisions are lost, the log carries on
            log.exception("decision log: %d decisions could not be made into records", count)
            self.dropped["record_failed"] += count
            self.in_flight = 0
            return
        try:
            async with asyncio.timeout(self.delivery_timeout_ms / 1000):
                sent = await outbox.flush_counted(self._producer)
                results = await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
        except (KafkaError, OSError, TimeoutError) as exc:
            self.dropped["delivery_failed"] += count
            self.in_flight = 0
            self._note_down(exc)
            await self._stop_producer()  # a fresh producer once the broker is back
            return
        acked = time.monotonic()
        failed = sum(
            n for (_, n), r in zip(sent, results, strict=True) if isinstance(r, BaseException)
        )
        self.dropped["delivery_failed"] += failed
        self.delivered += count - failed
        self.in_flight = 0
        for offered, _ in taken[:: max(1, len(taken) // 20)]:
            self.on_lag(acked - offered)
        self.connected = failed < count

    def _note_down(self, exc: BaseException) -> None:
        reason = str(exc) or type(exc).__name__
        if self.connected or not self.last_error:
            log.warning(
                "decision log: Kafka at %s unavailable (%s); decisions are dropped and counted "
                "until it is back", self.bootstrap, reason,
            )  # fmt: skip
        self.connected = False
        self.last_error = reason

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await producer.stop()
