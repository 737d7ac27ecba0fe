"""Micro-batching: concurrent requests share onnxruntime calls and get the same scores."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import msgspec
import pytest

from fraud_core.model_store import ModelStore
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SAMPLE_TRANSACTION
from tests.serving.conftest import running_server

pytestmark = pytest.mark.integration


async def score_concurrently(settings: ServingSettings, n: int) -> tuple[list[float], int]:
    payloads = [
        msgspec.json.encode({**SAMPLE_TRANSACTION, "transaction_id": f"b{i}", "amount": 5.0 + i})
        for i in range(n)
    ]
    app = create_app(settings)
    with running_server(app) as server:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(base_url=f"http://{server}", limits=limits) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/score", content=p) for p in payloads)
            )
        assert all(r.status_code == 200 for r in responses)
        batcher = app.state.batcher
        calls = batcher.batches if batcher is not None else n
    return [r.json()["score"] for r in responses], calls


async def test_concurrent_requests_share_calls_and_scores_do_not_change(
    tmp_path: Path, trained
) -> None:  # type: ignore[no-untyped-def]
    store = ModelStore(tmp_path / "models")
    store.publish(trained.bundle)
    base = {"model_store_dir": str(store.root), "cache_enabled": False}
    batched, calls = await score_concurrently(ServingSettings(**base, max_batch_wait_us=20_000), 24)
    alone, _ = await score_concurrently(ServingSettings(**base, batching_enabled=False), 24)
    assert batched == alone
    assert calls < 24
