"""Micro-batching: concurrent requests share onnxruntime calls and get the same scores."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import msgspec
import pytest

from fraud_core.model_store import ModelStore
from fraud_devtools.rest_server import running_server
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SAMPLE_TRANSACTION

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
        batcher = app.state.services.scoring.batcher
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


async def test_hot_swap_under_concurrent_load_fails_no_request(tmp_path: Path, trained) -> None:  # type: ignore[no-untyped-def]
    import onnx

    from fraud_core.bundle import make_bundle

    store = ModelStore(tmp_path / "models")
    store.publish(trained.bundle)
    newer = make_bundle(
        onnx.load_model_from_string(trained.bundle.onnx_bytes),
        msgspec.structs.replace(trained.bundle.metadata, version="2"),
    )
    settings = ServingSettings(
        model_store_dir=str(store.root), model_poll_seconds=0.01, cache_enabled=False
    )
    seen: list[str] = []
    with running_server(create_app(settings)) as server:
        async with httpx.AsyncClient(
            base_url=f"http://{server}", limits=httpx.Limits(max_connections=16)
        ) as client:
            for wave in range(30):
                if wave == 5:
                    store.publish(newer)
                payloads = [
                    msgspec.json.encode({**SAMPLE_TRANSACTION, "transaction_id": f"w{wave}-{i}"})
                    for i in range(16)
                ]
                responses = await asyncio.gather(
                    *(client.post("/v1/score", content=p) for p in payloads)
                )
                assert [r.status_code for r in responses] == [200] * 16
                seen += [r.json()["model_version"] for r in responses]
                if seen[-16:] == ["2"] * 16 and wave > 10:
                    break
    assert set(seen) == {"1", "2"}
    first_new = seen.index("2")
    assert all(v == "2" for v in seen[first_new + 16 :])  # once swapped, it stays swapped
