"""Adaptive micro-batching: concurrent requests' rows scored in one onnxruntime call.

The first request of a batch waits only while more keep arriving: the batcher yields to the
event loop and flushes once a few turns in a row bring nothing new, the batch is full, or
the wait cap has passed. A lone request therefore pays a few event-loop turns, not a fixed delay.
A batch never mixes model versions: rows are grouped by the Scorer their request took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fraud_core.scorer import Scorer


@dataclass
class _Pending:
    scorer: Scorer
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]


@dataclass
class MicroBatcher:
    max_rows: int = 64
    max_wait_us: int = 500
    idle_turns: int = 4
    """Event-loop turns without a new arrival after which the batch is flushed (a request
    passes several awaits between arriving and reaching the batcher)."""
    on_batch: Callable[[int], None] | None = None
    """Told the rows of every onnxruntime call (the batch size metric)."""
    batches: int = 0
    """onnxruntime calls made."""
    _queue: list[_Pending] = field(default_factory=list)
    _flushing: asyncio.Task[None] | None = None

    async def score(self, scorer: Scorer, rows: np.ndarray) -> np.ndarray:
        if len(rows) >= self.max_rows:
            self._count(len(rows))
            return scorer.score(rows)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(scorer, rows, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._gather_then_flush())
        return await future

    def _count(self, rows: int) -> None:
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(rows)

    def _rows_waiting(self) -> int:
        return sum(len(p.rows) for p in self._queue)

    async def _gather_then_flush(self) -> None:
        deadline = time.perf_counter() + self.max_wait_us / 1e6
        seen, idle = len(self._queue), 0
        while self._rows_waiting() < self.max_rows and time.perf_counter() < deadline:
            await asyncio.sleep(0)
            waiting = len(self._queue)
            idle = idle + 1 if waiting == seen else 0
            seen = waiting
            if idle >= self.idle_turns:
                break  # arrivals have stopped
        pending, self._queue = self._queue, []
        by_model: dict[int, list[_Pending]] = {}
        for item in pending:
            by_model.setdefault(id(item.scorer), []).append(item)
        for group in by_model.values():
            self._count(sum(len(p.rows) for p in group))
            try:
                scores = group[0].scorer.score(np.concatenate([p.rows for p in group]))
            except Exception as exc:  # every waiting request gets the failure, none hangs
                for p in group:
                    p.future.set_exception(exc)
                continue
            start = 0
            for p in group:
                p.future.set_result(scores[start : start + len(p.rows)])
                start += len(p.rows)
