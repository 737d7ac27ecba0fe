"""The services a request needs, made once in the app's lifespan (`serving.app`) and kept on
`app.state.services`; handlers take them as the `services` dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from litestar import Litestar
from litestar.datastructures import State
from opentelemetry.trace import Tracer

from fraud_core.model_store import ModelHolder
from serving.auth import Access
from serving.batching import RowScorer
from serving.cache import ScoreCache
from serving.metrics import ServingMetrics
from serving.services.scoring import ScoringPipeline
from serving.services.state import OnlineState
from serving.settings import ServingSettings


@dataclass(frozen=True)
class Services:
    settings: ServingSettings
    models: ModelHolder
    """The served champion, swapped whole when a new one is published."""
    online_state: OnlineState
    """Card and merchant states (Redis, or none)."""
    cache: ScoreCache | None
    """Scores by request and model version (None when caching is off)."""
    tracer: Tracer
    metrics: ServingMetrics
    scoring: ScoringPipeline
    """Transactions to scores: cache, state, features, micro-batched inference."""
    rows: RowScorer
    """Feature rows to scores (V2 infer), micro-batched."""
    access: Access
    """API keys, scopes and rate limits."""


def services_of(app: Litestar) -> Services:
    """The app's services (for middleware and fast lanes, which see the scope only)."""
    return cast(Services, app.state.services)


def provide_services(state: State) -> Services:
    return cast(Services, state.services)
