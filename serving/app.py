"""The REST scorer: `create_app()` builds it; `python -m serving.app` runs it under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from litestar import Litestar
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from opentelemetry.sdk.trace import TracerProvider

from fraud_core.features import warm_up
from fraud_core.model_store import ModelHolder, ModelStore, RegistryRollout, RolloutSource
from fraud_core.online_store import connect_async
from fraud_core.runtime import freeze_start_up_heap, report_native
from serving.auth import Access, parse_api_keys
from serving.batching import RowScorer
from serving.cache import ScoreCache
from serving.controllers.health import HealthController
from serving.controllers.inference import INFER_LANE, InferenceController
from serving.controllers.score import SCORE_LANE, ScoreController
from serving.decision_log import DecisionLog
from serving.deps import Services, provide_services
from serving.errors import ApiError, api_error_handler, http_error_handler, internal_error_handler
from serving.lane import WithFastLanes
from serving.metrics import ServingMetrics, metrics_endpoint, metrics_middleware
from serving.openapi import document_settings
from serving.server import server_options
from serving.services.redis_lane import RedisLane
from serving.services.scoring import ScoringPipeline
from serving.services.state import NoOnlineState, OnlineState, RedisOnlineState
from serving.settings import ServingSettings
from serving.telemetry import configure_json_logs, make_tracer

log = logging.getLogger("serving")


def create_app(
    settings: ServingSettings | None = None,
    online_state: OnlineState | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Litestar:
    config = settings or ServingSettings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        store = ModelStore(Path(config.model_store_dir))
        source: RolloutSource = (
            RegistryRollout(config.mlflow_tracking_uri, config.mlflow_model_name, store)
            if config.mlflow_tracking_uri
            else store
        )
        models = ModelHolder(source, threads=config.onnx_threads)
        await asyncio.to_thread(models.refresh)
        await asyncio.to_thread(warm_up)
        timeout = config.redis_timeout_ms / 1000
        redis = connect_async(config.redis_url, timeout=timeout) if config.redis_url else None
        lane = RedisLane(redis, timeout) if redis is not None else None
        state = online_state or (RedisOnlineState(lane) if lane is not None else NoOnlineState())
        cache = None
        if config.cache_enabled:
            cache = ScoreCache(
                l1_size=config.l1_cache_size, ttl_seconds=config.cache_ttl_seconds, redis=lane,
            )  # fmt: skip
        tracer = make_tracer(config.otlp_endpoint, tracer_provider)
        metrics = ServingMetrics()
        batching = (
            (config.max_batch_rows, config.max_batch_wait_us) if config.batching_enabled else None
        )
        on_batch = metrics.batch_size.observe
        decisions = (
            DecisionLog(
                config.decision_log_bootstrap,
                config.decision_log_topic,
                capacity=config.decision_log_queue,
                on_lag=metrics.decision_lag.observe,
            )
            if config.decision_log_bootstrap
            else None
        )
        services = Services(
            settings=config,
            models=models,
            online_state=state,
            cache=cache,
            tracer=tracer,
            metrics=metrics,
            scoring=ScoringPipeline(
                models,
                state,
                cache,
                tracer,
                reasons=config.reasons,
                on_batch=on_batch,
                batching=batching,
                decision_log=decisions,
                shadow_sample=config.shadow_sample,
            ),
            rows=RowScorer(on_batch, batching),
            access=Access(
                parse_api_keys(config.api_keys),
                config.api_key_header,
                config.rate_limit_per_second,
                config.rate_limit_burst,
            ),
        )
        metrics.watch(cache, state, services.scoring)
        app.state.services = services

        if decisions is not None:
            decisions.start()
        watcher = asyncio.create_task(models.watch(config.model_poll_seconds))
        report_native(log)
        freeze_start_up_heap()
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await state.close()
            if decisions is not None:
                services.scoring.flush_shadow()
                await decisions.close()
            if cache is not None:
                await cache.drain()
            if lane is not None:
                await lane.aclose()
            if redis is not None:
                await redis.aclose()

    app = WithFastLanes(
        route_handlers=[ScoreController, HealthController, InferenceController, metrics_endpoint],
        middleware=[metrics_middleware],
        dependencies={"services": Provide(provide_services, sync_to_thread=False)},
        lifespan=[lifespan],
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        request_max_body_size=config.max_body_bytes,
        openapi_config=OpenAPIConfig(title="fraudscale", version="0.1.0", path="/docs"),
    )
    app.fast_lanes = (SCORE_LANE, INFER_LANE)
    document_settings(
        app.openapi_schema,
        max_batch_transactions=config.max_batch_transactions,
        api_key_header=config.api_key_header,
        keys=bool(config.api_keys),
    )
    return app


def main() -> None:
    import uvicorn

    settings = ServingSettings.from_env()
    if settings.json_logs:
        configure_json_logs()
    else:
        logging.basicConfig(level=logging.INFO)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        **server_options(),
    )


if __name__ == "__main__":
    main()
