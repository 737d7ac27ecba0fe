"""POST /v1/score and /v1/score/batch."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.types import Scope

from fraud_core.schema import Transaction
from fraud_core.scoring import Score
from serving.auth import require
from serving.deps import Services, services_of
from serving.errors import ApiError, decode_body
from serving.lane import FastLane, require_media_type
from serving.openapi import error_responses, with_body


class BatchRequest(msgspec.Struct, frozen=True):
    transactions: Annotated[list[Transaction], msgspec.Meta(min_length=1)]
    """At least one, at most FRAUD_SERVING_MAX_BATCH_TRANSACTIONS (1,000 by default)."""


class BatchResponse(msgspec.Struct, frozen=True):
    scores: list[Score]


ERRORS = error_responses(400, 401, 403, 413, 415, 422, 429, 503)


async def answer_score(scope: Scope, body: bytes) -> Score:
    """POST /v1/score's answer (its handler and its fast lane)."""
    require_media_type(scope)
    services = services_of(scope["litestar_app"])
    return (await services.scoring.score([decode_body(body, Transaction)]))[0]


SCORE_LANE = FastLane(re.compile("/v1/score"), "score", "score", answer_score)


class ScoreController(Controller):
    path = "/v1/score"
    before_request = require("score")  # type: ignore[assignment]  # a function, not a method
    tags = ["scoring"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @post(
        "/", operation_id="score", name="score", status_code=200,
        operation_class=with_body(Transaction), responses=ERRORS,
    )  # fmt: skip
    async def score(self, request: Request) -> Score:
        """Score one transaction: probability, decision, model version and top reasons."""
        return await answer_score(request.scope, await request.body())

    @post(
        "/batch", operation_id="score_batch", name="score_batch", status_code=200,
        operation_class=with_body(BatchRequest), responses=ERRORS,
    )  # fmt: skip
    async def score_batch(
        self, request: Request, services: NamedDependency[Services]
    ) -> BatchResponse:
        """Score up to `max_batch_transactions` transactions in one call, in order."""
        require_media_type(request.scope)
        batch = decode_body(await request.body(), BatchRequest)
        limit = services.settings.max_batch_transactions
        if len(batch.transactions) > limit:
            raise ApiError(
                422, "too_many", f"{len(batch.transactions)} transactions, at most {limit}",
                "transactions",
            )  # fmt: skip
        return BatchResponse(await services.scoring.score(batch.transactions))
