"""A batch's scores go to the producer only once the broker has its changelog entries, and in
batch order; nothing is acknowledged before its own records are with the broker.

The broker's acknowledgements are stand-ins here (a future per flush, resolved by the test):
the fault is an acknowledgement that comes late or not at all for one batch, which a real
broker cannot be made to produce at a chosen moment. The stream tests on the real broker
hold the consequence (every score the broker has is one whose entry the changelog has)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streaming.checkpoint import Checkpoint

pytestmark = pytest.mark.unit


class Broker:
    """Records each flush in order and acknowledges it when the test says."""

    def __init__(self) -> None:
        self.flushed: list[str] = []
        self.acks: dict[str, asyncio.Future[None]] = {}

    def outbox(self, name: str) -> Any:
        broker = self

        class Flushed:
            async def flush(self, producer: object) -> list[asyncio.Future[None]]:
                broker.flushed.append(name)
                broker.acks[name] = asyncio.get_running_loop().create_future()
                return [broker.acks[name]]

        return Flushed()

    def ack(self, name: str, error: Exception | None = None) -> None:
        if error is None:
            self.acks[name].set_result(None)
        else:
            self.acks[name].set_exception(error)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_scores_wait_for_their_changelog_and_for_the_batch_before() -> None:
    broker, acknowledged, failures = Broker(), [], []

    async def failed(exc: BaseException) -> None:
        failures.append(exc)

    checkpoint = Checkpoint(lambda: None, failed)  # type: ignore[arg-type,return-value]

    async def run(n: int) -> None:
        await checkpoint.run(
            lambda: n,
            lambda b: broker.outbox(f"changelog {b}"),
            lambda b: broker.outbox(f"scores {b}"),
            lambda: acknowledged.append(n),
        )

    await run(1)
    await run(2)
    await settle()
    assert broker.flushed == ["changelog 1", "changelog 2"]  # no score before its changelog
    broker.ack("changelog 2")
    await settle()
    assert broker.flushed == ["changelog 1", "changelog 2"]  # nor before the batch before's
    broker.ack("changelog 1")
    await settle()
    assert broker.flushed == ["changelog 1", "changelog 2", "scores 1", "scores 2"]
    assert acknowledged == []  # the scores are not with the broker yet
    broker.ack("scores 2")
    broker.ack("scores 1")
    await settle()
    assert sorted(acknowledged) == [1, 2]

    # A changelog the broker refuses: that batch is never acknowledged, the worker is told,
    # and the batch after it sends no scores either (its own changelog made it).
    await run(3)
    await run(4)
    await settle()
    broker.ack("changelog 4")
    broker.ack("changelog 3", OSError("broker gone"))
    await settle()
    assert [str(f) for f in failures] == ["broker gone"]
    assert "scores 3" not in broker.flushed
    assert "scores 4" not in broker.flushed
    assert sorted(acknowledged) == [1, 2]
