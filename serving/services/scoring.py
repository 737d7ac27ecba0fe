"""Transactions to scores: score cache, online state, features, inference, cache fill.

With batching on, concurrent requests go through together: one Redis round trip for the L2
cache, one for the card and merchant states, one onnxruntime call and one cache write per
batch instead of per request (redis-py's cost is per command, and would otherwise be a large
share of a request's CPU). A request whose scores are all in the in-process cache is answered
without joining a batch. A batch takes the served model once, so no response mixes versions.
Trace spans (cache_lookup, online_state, features, inference) are the batch's, in the trace
of the request that opened it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import msgspec
from opentelemetry.trace import Tracer

from fraud_core.inference import Scorer
from fraud_core.model_store import ModelHolder
from fraud_core.schema import Transaction
from fraud_core.scoring import Score, build_scores, transaction_features
from serving.batching import MicroBatcher, micro_batcher
from serving.cache import ScoreCache, cache_key
from serving.errors import ApiError
from serving.services.state import OnlineState


def served_model(models: ModelHolder) -> Scorer:
    scorer = models.current
    if scorer is None:
        raise ApiError(503, "model_not_ready", "no valid model is published yet")
    return scorer


class _Request(NamedTuple):
    transactions: list[Transaction]
    version: str
    """The model version `keys` were made for ("" when there is no cache)."""
    keys: list[str]

    def keys_for(self, version: str) -> list[str]:
        """Cache keys for `version`: the request's own unless the model changed meanwhile."""
        if version == self.version:
            return self.keys
        return [cache_key(t, version) for t in self.transactions]


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
        self.batcher: MicroBatcher[_Request, list[Score]] = micro_batcher(
            self._process, batching, size=lambda request: len(request.transactions)
        )

    async def score(self, transactions: list[Transaction]) -> list[Score]:
        """One score per transaction, in order, each with this request's server time."""
        started = time.perf_counter_ns()
        request = _Request(transactions, "", [])
        scores = None
        if self.cache is not None:
            version = served_model(self.models).version
            request = _Request(transactions, version, [cache_key(t, version) for t in transactions])
            scores = self.cache.get_local(request.keys)
        if scores is None:
            scores = await self.batcher.submit(request)
        elapsed = (time.perf_counter_ns() - started) // 1000
        return [msgspec.structs.replace(s, server_time_us=elapsed) for s in scores]

    async def _process(self, requests: list[_Request]) -> list[list[Score]]:
        scorer = served_model(self.models)  # once: the whole batch uses this version
        transactions = [t for request in requests for t in request.transactions]
        cache = self.cache
        keys = (
            [k for request in requests for k in request.keys_for(scorer.version)] if cache else []
        )
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
                x = transaction_features(misses, states.cards, states.merchants, scorer.contract)
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
            n = len(request.transactions)
            out.append(answers[start : start + n])
            start += n
        return out
