"""The order in which a batch of transactions becomes committed offsets, as one object.

    1. score        decode, step the card states, score: in memory only
    2. produce      outputs (scores, alerts, dead letters) and changelog records, handed
                    to the producer together
    3. flush        the broker has acknowledged every record of step 2
    4. acknowledge  the batch's input offsets may be committed
    5. commit       Faust's commit loop commits acknowledged offsets (every
                    `broker_commit_interval` seconds or `broker_commit_every` records),
                    flushing the producer once more first

Steps 3 and 4 run off the batch loop (the next batch is scored while this one's records
travel), but a batch's offsets are never acknowledged before its own records are with the
broker. A worker that dies anywhere before step 5 leaves its batch uncommitted: whoever owns
the partition next receives it again, finds the changelog's entries (if step 3 happened) or
the older ones (if not), and scores it to the same results (streaming.scoring explains how).

For fault-injection tests, `kill_at` ("<step>:<n>", e.g. "flush:3") makes the worker SIGKILL
itself right after step <step> of its n-th batch: a kill -9 at an exact point, which a signal
from outside cannot aim at.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from fraud_core.outbox import Outbox

log = logging.getLogger(__name__)

B = TypeVar("B")

STEPS = ("score", "produce", "flush", "acknowledge")
"""The steps a batch goes through in the worker (the commit is Faust's)."""


def parse_kill_at(value: str) -> tuple[str, int] | None:
    """ "<step>:<n>" -> (step, n); "" -> None."""
    if not value:
        return None
    step, _, number = value.partition(":")
    if step not in STEPS or not number.isdigit() or int(number) < 1:
        raise ValueError(f"kill_at {value!r}: expected <step>:<n> with a step of {STEPS}")
    return step, int(number)


class Checkpoint:
    """Takes each batch through steps 1-4 in order (see the module docstring)."""

    def __init__(
        self,
        producer: Callable[[], AIOKafkaProducer],
        on_failure: Callable[[BaseException], Awaitable[Any]],
        *,
        kill_at: str = "",
    ) -> None:
        self._producer = producer
        self._on_failure = on_failure
        self._kill_at = parse_kill_at(kill_at)
        self._pending: set[asyncio.Task[None]] = set()
        self.batches = 0

    async def run(
        self,
        score: Callable[[], B],
        outputs: Callable[[B], Outbox],
        acknowledge: Callable[[], None],
    ) -> B:
        """1. `score` the batch, 2. produce its `outputs` (records and changelog); 3. flush
        and 4. `acknowledge` follow when the broker has them. Returns what `score` did."""
        self.batches += 1
        number = self.batches
        scored = score()
        self._reached("score", number)
        sent = await outputs(scored).flush(self._producer())
        self._reached("produce", number)
        task = asyncio.ensure_future(self._finish(number, sent, acknowledge))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return scored

    async def _finish(
        self, number: int, sent: Sequence[asyncio.Future[Any]], acknowledge: Callable[[], None]
    ) -> None:
        try:
            await asyncio.gather(*sent)
        except Exception as exc:  # the producer gave up: nothing may be acknowledged
            log.error("batch %d not delivered, its offsets stay uncommitted: %r", number, exc)
            await self._on_failure(exc)
            return
        self._reached("flush", number)
        acknowledge()
        self._reached("acknowledge", number)

    async def drain(self) -> None:
        """Wait until every batch handed to the producer is acknowledged (or failed)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _reached(self, step: str, number: int) -> None:
        if self._kill_at == (step, number):
            log.warning("kill_at %s:%d: SIGKILL", step, number)
            os.kill(os.getpid(), signal.SIGKILL)
