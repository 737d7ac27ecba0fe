"""POST /v1/score and /v1/score/batch."""

from __future__ import annotations

import time
from typing import TypeVar

import msgspec
import numpy as np
from litestar import Controller, Request, post
from litestar.datastructures import State
from opentelemetry.trace import Tracer

from fraud_core.schema import SchemaError, Transaction, decode_json
from fraud_core.scorer import Scorer
from fraud_core.scoring import Score, build_scores, transaction_features
from serving.auth import require
from serving.batching import MicroBatcher
from serving.cache import ScoreCache, cache_key
from serving.errors import ApiError

T = TypeVar("T")


class BatchRequest(msgspec.Struct, frozen=True):
    transactions: list[Transaction]


class BatchResponse(msgspec.Struct, frozen=True):
    scores: list[Score]


def served_model(state: State) -> Scorer:
    scorer: Scorer | None = state.models.current
    if scorer is None:
        raise ApiError(503, "model_not_ready", "no valid model is published yet")
    return scorer


async def decode_body(request: Request, kind: type[T]) -> T:
    """The request body decoded and validated as `kind`; a 4xx ApiError naming the field."""
    try:
        return decode_json(await request.body(), kind)
    except SchemaError as exc:
        raise ApiError.from_schema(exc) from None


async def infer(state: State, scorer: Scorer, x: np.ndarray) -> np.ndarray:
    """Scores of a feature matrix: through the micro-batcher when it is on."""
    batcher: MicroBatcher | None = state.batcher
    if batcher is None:
        state.metrics.batch_size.observe(len(x))
        return scorer.score(x)
    return await batcher.score(scorer, x)


async def _score(state: State, transactions: list[Transaction]) -> list[Score]:
    started = time.perf_counter_ns()
    scorer = served_model(state)  # taken once: the whole request uses this version
    tracer: Tracer = state.tracer
    cache: ScoreCache | None = state.cache
    keys = [cache_key(t, scorer.version) for t in transactions] if cache else []
    with tracer.start_as_current_span("cache_lookup"):
        found: list[Score | None] = (
            await cache.get_many(keys) if cache else [None] * len(transactions)
        )
    todo = [i for i, f in enumerate(found) if f is None]
    if todo:
        misses = [transactions[i] for i in todo]
        with tracer.start_as_current_span("online_state"):
            states = await state.online_state.fetch(
                [t.card_id for t in misses], [t.merchant_id for t in misses]
            )
        with tracer.start_as_current_span("features"):
            x = transaction_features(misses, states.cards, states.merchants)
        with tracer.start_as_current_span("inference") as span:
            span.set_attribute("model.version", scorer.version)
            span.set_attribute("rows", len(x))
            raw = await infer(state, scorer, x)
        scores = build_scores(
            scorer,
            misses,
            x,
            raw,
            reasons=state.settings.reasons,
            degraded=states.degraded,
            started_ns=started,
        )
        for i, score in zip(todo, scores, strict=True):
            found[i] = score
        if cache and not states.degraded:  # a score without the card's state is not kept
            cache.put_many([keys[i] for i in todo], scores)
    return [f for f in found if f is not None]


class ScoreController(Controller):
    path = "/v1/score"
    guards = [require("score")]  # noqa: RUF012 (Litestar reads it as a class attribute)
    tags = ["scoring"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @post("/", operation_id="score", name="score", status_code=200)
    async def score(self, request: Request, state: State) -> Score:
        """Score one transaction: probability, decision, model version and top reasons."""
        transaction = await decode_body(request, Transaction)
        return (await _score(state, [transaction]))[0]

    @post("/batch", operation_id="score_batch", name="score_batch", status_code=200)
    async def score_batch(self, request: Request, state: State) -> BatchResponse:
        """Score up to `max_batch_transactions` transactions in one call, in order."""
        batch = await decode_body(request, BatchRequest)
        limit = state.settings.max_batch_transactions
        if not batch.transactions:
            raise ApiError(422, "invalid_field", "at least one transaction", "transactions")
        if len(batch.transactions) > limit:
            raise ApiError(
                422, "too_many", f"{len(batch.transactions)} transactions, at most {limit}",
                "transactions",
            )  # fmt: skip
        return BatchResponse(await _score(state, batch.transactions))
