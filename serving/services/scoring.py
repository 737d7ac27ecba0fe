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

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import msgspec
import numpy as np
from opentelemetry.trace import Tracer

from fraud_core.inference import Scorer
from fraud_core.model_store import ModelHolder, Served
from fraud_core.rollout import SHADOW, now_us
from fraud_core.schema import Transaction
from fraud_core.scoring import (
    DecisionBatch,
    RoleScores,
    Score,
    role_answers,
    sampled,
    score_by_role,
    shadow_inputs,
    stateful_rows,
)
from serving.batching import MicroBatcher, micro_batcher
from serving.cache import ScoreCache, cache_key
from serving.decision_log import DecisionLog
from serving.errors import ApiError
from serving.services.state import OnlineState


def served_models(models: ModelHolder) -> Served:
    served = models.served
    if served is None:
        raise ApiError(503, "model_not_ready", "no valid model is published yet")
    return served


def role_keys(transactions: Sequence[Transaction], served: Served) -> list[str]:
    """Cache keys of transactions for the model and role that answer each one's card."""
    keys = []
    for t in transactions:
        role, scorer = served.for_card(t.card_id)
        keys.append(cache_key(t, scorer.version, role))
    return keys


SHADOW_GATHER_SECONDS = 0.05
"""How long sampled requests wait for the challenger: shadow scoring is off the response path,
and one onnxruntime call for all of them is cheaper than one per micro-batch."""


class _Request(NamedTuple):
    transactions: list[Transaction]
    served: Served | None
    """The models `keys` were made for (None when there is no cache)."""
    keys: list[str]

    def keys_for(self, served: Served) -> list[str]:
        """Cache keys for `served`: the request's own unless the models changed meanwhile."""
        if served is self.served:
            return self.keys
        return role_keys(self.transactions, served)


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
        decision_log: DecisionLog | None = None,
        shadow_sample: float = 0.0,
    ) -> None:
        """`batching`: (most rows, longest wait in microseconds), or None for no batching."""
        self.models, self.online_state, self.cache = models, online_state, cache
        self.tracer, self.reasons, self.on_batch = tracer, reasons, on_batch
        self.decision_log, self.shadow_sample = decision_log, shadow_sample
        self._shadow_waiting: list[tuple[Scorer, list[Transaction], np.ndarray, bool]] = []
        """Sampled transactions waiting for the challenger, with its inputs for them."""
        self._shadow_timer: asyncio.TimerHandle | None = None
        self.decided: dict[tuple[str, str], list[int]] = {}
        """(model version, role) -> [scores, alerts] computed (not served from the cache)."""
        self.degraded_scores = 0
        """Transactions scored without their card's and merchant's state (Redis down)."""
        self.batcher: MicroBatcher[_Request, list[Score]] = micro_batcher(
            self._process, batching, size=lambda request: len(request.transactions)
        )

    async def score(self, transactions: list[Transaction]) -> list[Score]:
        """One score per transaction, in order, each with this request's server time."""
        started = time.perf_counter_ns()
        request = _Request(transactions, None, [])
        scores = None
        if self.cache is not None:
            served = served_models(self.models)
            request = _Request(transactions, served, role_keys(transactions, served))
            scores = self.cache.get_local(request.keys)
        if scores is None:
            scores = await self.batcher.submit(request)
        elapsed = (time.perf_counter_ns() - started) // 1000
        return [msgspec.structs.replace(s, server_time_us=elapsed) for s in scores]

    async def _process(self, requests: list[_Request]) -> list[list[Score]]:
        served = served_models(self.models)  # once: the whole batch uses these models
        transactions = [t for request in requests for t in request.transactions]
        cache = self.cache
        keys = [k for request in requests for k in request.keys_for(served)] if cache else []
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
                stateful = stateful_rows(misses, states.cards, states.merchants)
            decided_at = now_us()
            parts = self._score_parts(served, misses, stateful)
            answered = role_answers(parts, misses, reasons=self.reasons, degraded=states.degraded)
            if states.degraded:
                self.degraded_scores += len(misses)
            for i, score in zip(todo, answered, strict=True):
                found[i] = score
            if cache and not states.degraded:  # a score without the card's state is not kept
                cache.put_many([keys[i] for i in todo], [found[i] for i in todo])  # type: ignore[misc]
            if self.decision_log is not None:
                # After the responses are written: call_later(0) runs behind the wake-ups of
                # the requests this batch answers, in the loop's next turn.
                asyncio.get_running_loop().call_later(
                    0, self._log_decisions, served, misses, stateful, parts, decided_at,
                    states.degraded,
                )  # fmt: skip
        answers = [f for f in found if f is not None]
        out, start = [], 0
        for request in requests:
            n = len(request.transactions)
            out.append(answers[start : start + n])
            start += n
        return out

    def _score_parts(
        self, served: Served, misses: list[Transaction], stateful: list[list[float]]
    ) -> list[RoleScores]:
        with self.tracer.start_as_current_span("inference") as span:
            self.on_batch(len(misses))
            parts = score_by_role(served, misses, stateful)
            span.set_attribute("model.version", served.champion.version)
            span.set_attribute("rows", len(misses))
        for part in parts:
            counts = self.decided.setdefault((part.scorer.version, part.role), [0, 0])
            counts[0] += len(part.scores)
            counts[1] += part.alerts()
        return parts

    def _log_decisions(
        self,
        served: Served,
        misses: list[Transaction],
        stateful: list[list[float]],
        parts: list[RoleScores],
        decided_at: int,
        degraded: bool,
    ) -> None:
        """Queue the batch's decisions; hold its sample for the challenger's shadow scoring."""
        assert self.decision_log is not None
        self.decision_log.offer(
            [DecisionBatch("rest", part, misses, decided_at, degraded) for part in parts]
        )
        shadow = served.shadow
        if shadow is None or self.shadow_sample <= 0:
            return
        rows = sampled(misses, self.shadow_sample)
        if not rows:
            return
        inputs = shadow_inputs(served, misses, stateful, parts, rows)
        self._shadow_waiting.append((shadow, [misses[i] for i in rows], inputs, degraded))
        if self._shadow_timer is None:
            self._shadow_timer = asyncio.get_running_loop().call_later(
                SHADOW_GATHER_SECONDS, self._score_shadow
            )

    def flush_shadow(self) -> None:
        """Score what waits for the challenger now (at shutdown, before the decision log
        drains)."""
        if self._shadow_timer is not None:
            self._shadow_timer.cancel()
            self._score_shadow()

    def _score_shadow(self) -> None:
        """The challenger's scores of the sampled requests since the last call, one
        onnxruntime call per challenger (not one per micro-batch), to the decision log."""
        assert self.decision_log is not None
        self._shadow_timer = None
        waiting, self._shadow_waiting = self._shadow_waiting, []
        by_model: dict[tuple[int, bool], tuple[Scorer, list[Transaction], list[np.ndarray]]] = {}
        for scorer, transactions, inputs, degraded in waiting:
            key = (id(scorer), degraded)
            _, gathered, matrices = by_model.setdefault(key, (scorer, [], []))
            gathered += transactions
            matrices.append(inputs)
        for (_, degraded), (scorer, transactions, matrices) in by_model.items():
            x = np.concatenate(matrices)
            part = RoleScores.of(SHADOW, scorer, list(range(len(transactions))), x)
            batch = DecisionBatch("rest", part, transactions, now_us(), degraded)
            self.decision_log.offer([batch])
