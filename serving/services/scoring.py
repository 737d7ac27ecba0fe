"""Transactions to scores: score cache, online state, features, inference, cache fill.

With batching on, concurrent requests go through together: one Redis round trip for the L2
cache, one for the card and merchant states, one onnxruntime call and one pipelined cache
write per batch instead of per request (on one core, redis-py's per-command cost was a third
of a request's CPU). A request whose scores are all in the in-process cache is answered
without joining a batch. A batch takes the served model once, so no response mixes versions.
Trace spans (cache_lookup, online_state, features, inference) are the batch's, in the trace
of the request that opened it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import msgspec
from opentelemetry.trace import Tracer

from fraud_core.model_store import ModelHolder
from fraud_core.schema import Transaction
from fraud_core.scorer import Scorer
from fraud_core.scoring import Score, build_scores, transaction_features
from serving.batching import MicroBatcher
from serving.cache import ScoreCache, cache_key
from serving.errors import ApiError
from serving.services.state import OnlineState


def served_model(models: ModelHolder) -> Scorer:
    scorer = models.current
    if scorer is None:
        raise ApiError(503, "model_not_ready", "no valid model is published yet")
    return scorer


class ScoringPipeline:
    def __init__(
        self,
        models: ModelHolder,
        online_state: OnlineState,
        cache: ScoreCache | None,
        tracer: Tracer,
        *,
        reasons: int,
        on_batch: Callable[[int], None],
        batching: tuple[int, int] | None = (64, 500),
    ) -> None:
        """`batching`: (most rows, longest wait in microseconds), or None for no batching."""
        self.models, self.online_state, self.cache = models, online_state, cache
        self.tracer, self.reasons, self.on_batch = tracer, reasons, on_batch
        self.batcher: MicroBatcher[list[Transaction], list[Score]] | None = (
            MicroBatcher(self._process, max_rows=batching[0], max_wait_us=batching[1])
            if batching
            else None
        )

    async def score(self, transactions: list[Transaction]) -> list[Score]:
        """One score per transaction, in order, each with this request's server time."""
        started = time.perf_counter_ns()
        scores = self._cached(transactions)
        if scores is None:
            if self.batcher is not None:
                scores = await self.batcher.submit(transactions)
            else:
                scores = (await self._process([transactions]))[0]
        elapsed = (time.perf_counter_ns() - started) // 1000
        return [msgspec.structs.replace(s, server_time_us=elapsed) for s in scores]

    def _cached(self, transactions: Sequence[Transaction]) -> list[Score] | None:
        """All the request's scores from the in-process cache, or None."""
        if self.cache is None:
            return None
        version = served_model(self.models).version
        return self.cache.get_local([cache_key(t, version) for t in transactions])

    async def _process(self, requests: list[list[Transaction]]) -> list[list[Score]]:
        scorer = served_model(self.models)  # once: the whole batch uses this version
        transactions = [t for request in requests for t in request]
        cache = self.cache
        keys = [cache_key(t, scorer.version) for t in transactions] if cache else []
        with self.tracer.start_as_current_span("cache_lookup"):
            found: list[Score | None] = (
                await cache.get_many(keys) if cache else [None] * len(transactions)
            )
        todo = [i for i, f in enumerate(found) if f is None]
        if todo:
            misses = [transactions[i] for i in todo]
            with self.tracer.start_as_current_span("online_state"):
                states = await self.online_state.fetch(
                    [t.card_id for t in misses], [t.merchant_id for t in misses]
                )
            with self.tracer.start_as_current_span("features"):
                x = transaction_features(misses, states.cards, states.merchants)
            with self.tracer.start_as_current_span("inference") as span:
                span.set_attribute("model.version", scorer.version)
                span.set_attribute("rows", len(x))
                self.on_batch(len(x))
                raw = scorer.score(x)
            scores = build_scores(
                scorer, misses, x, raw, reasons=self.reasons, degraded=states.degraded
            )
            for i, score in zip(todo, scores, strict=True):
                found[i] = score
            if cache and not states.degraded:  # a score without the card's state is not kept
                cache.put_many([keys[i] for i in todo], scores)
        answers = [f for f in found if f is not None]
        out, start = [], 0
        for request in requests:
            out.append(answers[start : start + len(request)])
            start += len(request)
        return out
