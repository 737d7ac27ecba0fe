"""The order in which a batch of transactions becomes committed offsets, as one object.

    1. score        decode, step the card states, score: in memory only
    2. produce      the batch's changelog records (its card entries) handed to the producer
    3. changelog    the broker has acknowledged every changelog record of step 2; only now
                    are the outputs (scores, alerts, dead letters, decisions) handed to the
                    producer, after those of the batch before (outputs keep batch order)
    4. flush        the broker has acknowledged every output of step 3
    5. acknowledge  the batch's input offsets may be committed
    6. commit       Faust's commit loop commits acknowledged offsets (every
                    `broker_commit_interval` seconds or `broker_commit_every` records),
                    flushing the producer once more first

Steps 3 to 5 run off the batch loop (the next batch is scored while this one's records
travel), but a batch's offsets are never acknowledged before its own records are with the
broker. A worker that dies anywhere before step 6 leaves its batch uncommitted: whoever owns
the partition next receives it again, finds the changelog's entries (if step 3 happened) or
the older ones (if not), and scores it to the same results (streaming.scoring explains how).

Why the changelog goes first: a score the broker holds is then always one whose features
the changelog remembers, so a redelivered transaction is scored again from those features
and counted as redelivered. Handed to the producer together, the outputs could reach the
broker without the changelog (the producer sends a partition's records as soon as they are
ready, and a worker killed between the two sends leaves scores behind whose card entries
were never written); the next owner then scored the transaction as new, from merchant risk
that labels may have changed since, and a consumer saw two different scores for it.

For fault-injection tests, `kill_at` ("<step>:<n>", e.g. "changelog:3") makes the worker
SIGKILL itself right after step <step> of its n-th batch: a kill -9 at an exact point, which
a signal from outside cannot aim at.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from fraud_core.outbox import Outbox

log = logging.getLogger(__name__)

B = TypeVar("B")

STEPS = ("score", "produce", "changelog", "flush", "acknowledge")
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
    """Takes each batch through steps 1-5 in order (see the module docstring)."""

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
        self._outputs_handed: asyncio.Future[bool] | None = None
        """The latest batch's outputs are with the producer (True) or never will be (False)."""
        self.batches = 0

    async def run(
        self,
        score: Callable[[], B],
        changes: Callable[[B], Outbox],
        outputs: Callable[[B], Outbox],
        acknowledge: Callable[[], None],
    ) -> B:
        """1. `score` the batch, 2. produce its `changes` (changelog records); 3. its
        `outputs`, 4. their flush and 5. `acknowledge` follow when the broker has the
        changes. Returns what `score` did."""
        self.batches += 1
        number = self.batches
        scored = score()
        self._reached("score", number)
        sent = await changes(scored).flush(self._producer())
        self._reached("produce", number)
        before, self._outputs_handed = self._outputs_handed, asyncio.Future()
        task = asyncio.ensure_future(
            self._finish(number, sent, functools.partial(outputs, scored), before,
                         self._outputs_handed, acknowledge)
        )  # fmt: skip
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return scored

    async def _finish(
        self,
        number: int,
        changes: Sequence[asyncio.Future[Any]],
        outputs: Callable[[], Outbox],
        before: asyncio.Future[bool] | None,
        handed: asyncio.Future[bool],
        acknowledge: Callable[[], None],
    ) -> None:
        try:
            await asyncio.gather(*changes)
            self._reached("changelog", number)
            if before is not None and not await before:
                handed.set_result(False)  # the worker is crashing: its outputs stay unsent
                return
            sent = await outputs().flush(self._producer())
            handed.set_result(True)
            await asyncio.gather(*sent)
        except Exception as exc:  # the producer gave up: nothing may be acknowledged
            if not handed.done():
                handed.set_result(False)
            log.error("batch %d not delivered, its offsets stay uncommitted: %r", number, exc)
            await self._on_failure(exc)
            return
        self._reached("flush", number)
        acknowledge()
        self._reached("acknowledge", number)

    def _reached(self, step: str, number: int) -> None:
        if self._kill_at == (step, number):
            log.warning("kill_at %s:%d: SIGKILL", step, number)
            os.kill(os.getpid(), signal.SIGKILL)
