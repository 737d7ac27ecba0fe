"""Adaptive micro-batching: concurrent requests' work done in one pass.

Each request submits one item and awaits its result; the first item of a batch waits only
while more keep arriving: the batcher yields to the event loop and flushes once a few turns
in a row bring nothing new, the batch is full, or the wait cap has passed. A lone request
therefore pays a few event-loop turns, not a fixed delay. While one batch is being processed
(waiting on Redis, say) the next one gathers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from fraud_core.inference import Scorer

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class MicroBatcher(Generic[T, R]):
    process: Callable[[list[T]], Awaitable[list[R]]]
    """Does a batch's work: one result per item, in order."""
    size: Callable[[T], int] = len  # type: ignore[assignment]
    """Rows of an item (default: its length); a batch holds up to `max_rows` rows."""
    max_rows: int = 64
    max_wait_us: int = 500
    idle_turns: int = 4
    """Event-loop turns without a new arrival after which the batch is flushed (a request
    passes several awaits between arriving and reaching the batcher)."""
    enabled: bool = True
    """False: every item is processed alone, at once (batching switched off)."""
    batches: int = 0
    """Batches processed."""
    _queue: list[tuple[T, asyncio.Future[R]]] = field(default_factory=list)
    _rows: int = 0
    _flushing: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        rows = self.size(item)
        if not self.enabled or rows >= self.max_rows:
            self.batches += 1
            return (await self.process([item]))[0]
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._rows += rows
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._gather_then_flush())
        return await future

    async def _gather_then_flush(self) -> None:
        deadline = time.perf_counter() + self.max_wait_us / 1e6
        seen, idle = len(self._queue), 0
        while self._rows < self.max_rows and time.perf_counter() < deadline:
            await asyncio.sleep(0)
            waiting = len(self._queue)
            idle = idle + 1 if waiting == seen else 0
            seen = waiting
            if idle >= self.idle_turns:
                break  # arrivals have stopped
        pending, self._queue, self._rows = self._queue, [], 0
        self._flushing = None  # later arrivals gather the next batch meanwhile
        self.batches += 1
        try:
            results = await self.process([item for item, _ in pending])
        except Exception as exc:  # every waiting request gets the failure, none hangs
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(pending, results, strict=True):
            if not future.done():  # a caller that went away has cancelled its future
                future.set_result(result)


def micro_batcher(
    process: Callable[[list[T]], Awaitable[list[R]]],
    batching: tuple[int, int] | None,
    size: Callable[[T], int] = len,  # type: ignore[assignment]
) -> MicroBatcher[T, R]:
    """`batching`: (most rows, longest wait in microseconds), or None for no batching."""
    if batching is None:
        return MicroBatcher(process, size=size, enabled=False)
    return MicroBatcher(process, size=size, max_rows=batching[0], max_wait_us=batching[1])


class RowScorer:
    """Feature matrices to scores (the V2 infer path): with batching on, concurrent requests'
    rows go into one onnxruntime call per model version; rows keep the Scorer their request
    took, so a batch never mixes versions."""

    def __init__(self, on_batch: Callable[[int], None], batching: tuple[int, int] | None) -> None:
        """`batching`: (most rows, longest wait in microseconds), or None for no batching."""
        self.on_batch = on_batch
        self.batcher: MicroBatcher[tuple[Scorer, np.ndarray], np.ndarray] = micro_batcher(
            self._process, batching, size=lambda item: len(item[1])
        )

    async def score(self, scorer: Scorer, x: np.ndarray) -> np.ndarray:
        return await self.batcher.submit((scorer, x))

    async def _process(self, items: list[tuple[Scorer, np.ndarray]]) -> list[np.ndarray]:
        by_model: dict[int, list[int]] = {}
        for i, (scorer, _) in enumerate(items):
            by_model.setdefault(id(scorer), []).append(i)
        results: list[np.ndarray] = [np.empty(0, np.float32)] * len(items)
        for indices in by_model.values():
            rows = np.concatenate([items[i][1] for i in indices])
            self.on_batch(len(rows))
            scores = items[indices[0]][0].score(rows)
            start = 0
            for i in indices:
                n = len(items[i][1])
                results[i] = scores[start : start + n]
                start += n
        return results
