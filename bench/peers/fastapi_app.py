"""A seed-style FastAPI + pydantic scorer: validate, featurize the transaction alone (no card
history, no cache), one onnxruntime call.
`uvicorn --factory bench.peers.fastapi_app:create_app`; the bundle path comes from BENCH_BUNDLE."""

from __future__ import annotations

import datetime as dt
import os

from fastapi import FastAPI
from pydantic import BaseModel, Field

from fraud_core.bundle import read_bundle
from fraud_core.inference import Scorer
from fraud_core.schema import Transaction
from fraud_core.scoring import transaction_features
from fraud_core.state import CardState, MerchantState


class TransactionIn(BaseModel):
    transaction_id: str = Field(min_length=1, max_length=64)
    card_id: str = Field(min_length=1, max_length=64)
    merchant_id: str = Field(min_length=1, max_length=64)
    merchant_category: str
    amount: float = Field(ge=0, le=1_000_000)
    currency: str
    country: str
    channel: str
    timestamp: dt.datetime


class ScoreOut(BaseModel):
    transaction_id: str
    score: float
    decision: str


def create_app() -> FastAPI:
    scorer = Scorer(read_bundle(os.environ["BENCH_BUNDLE"]))
    app = FastAPI()

    @app.post("/score")
    async def score(body: TransactionIn) -> ScoreOut:
        t = Transaction(**body.model_dump())
        x = transaction_features([t], [CardState()], [MerchantState()], scorer.contract)
        s = float(scorer.score(x)[0])
        decision = "alert" if s >= scorer.threshold else "allow"
        return ScoreOut(transaction_id=t.transaction_id, score=s, decision=decision)

    return app
