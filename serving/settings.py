"""Settings of the REST scorer, from FRAUD_SERVING_* environment variables."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from fraud_core.settings import settings_from_env

PREFIX = "FRAUD_SERVING_"


class ServingSettings(msgspec.Struct, frozen=True, kw_only=True):
    model_store_dir: str = "data/models"
    """The local model store the asset graph publishes to (its role pointers CHAMPION, CANARY
    and CHALLENGER are watched)."""
    model_poll_seconds: float = 1.0
    """How often the store's pointers (or the registry's aliases) are checked for changes."""
    mlflow_tracking_uri: str = ""
    """An MLflow tracking server or store: when set, the models served are the ones its
    registry aliases `champion`, `canary` and `challenger` name (bundles mirrored into
    `model_store_dir`); empty: the local store's pointers. Needs mlflow installed (the
    `assets` extra has it)."""
    mlflow_model_name: str = "fraudscale-fraud"
    """The registered model whose aliases are followed."""
    max_batch_transactions: int = 1000
    """Most transactions accepted in one POST /v1/score/batch."""
    max_body_bytes: int = 1_000_000
    """Largest request body accepted (413 above)."""
    reasons: int = 3
    """How many top reasons each score carries."""
    onnx_threads: int = 1
    """onnxruntime intra-op threads; one is fastest for small batches on shared cores."""
    redis_url: str = ""
    """Online state store (card and merchant states written by the stream workers), e.g.
    redis://127.0.0.1:6379/0, redis+sentinel://h1:26379,h2:26379/<service>[/db] (the
    primary those Sentinels name) or redis+cluster://h1:6379,h2:6379 (a Redis Cluster);
    empty: no online store, every card scores as new. The score cache's second level lives
    there too."""
    redis_timeout_ms: float = 20.0
    """Past this a Redis read is abandoned (retries and a cluster's redirects included) and the
    request scored with default state."""
    cache_enabled: bool = True
    """Cache scores by request and model version (retries of a transaction are served from it)."""
    cache_ttl_seconds: float = 300.0
    l1_cache_size: int = 100_000
    """Entries kept in the in-process cache (the Redis one is bounded by its TTL)."""
    batching_enabled: bool = True
    """Gather concurrent requests into one onnxruntime call."""
    max_batch_rows: int = 64
    max_batch_wait_us: int = 500
    """Longest a request waits for company; the batcher flushes sooner once arrivals stop."""
    decision_log_bootstrap: str = ""
    """Kafka bootstrap servers the decision log is written to (every decision of every role,
    topic `decision_log_topic`); empty: no decision log."""
    decision_log_topic: str = "fraudscale.decisions"
    """The stream workers write theirs to `<topic prefix>.decisions`: the same topic."""
    decision_log_queue: int = 10_000
    """Decisions waiting for Kafka at most; beyond it they are dropped and counted (a slow or
    absent broker never blocks a response nor grows the process)."""
    shadow_sample: float = 0.1
    """Share of requests (by a hash of the transaction id) the challenger scores in shadow,
    after the response (with a challenger published and the decision log on)."""
    api_keys: str = ""
    """`key:score+infer,key2:score`; empty leaves the service open (local use)."""
    api_key_header: str = "X-API-Key"
    rate_limit_per_second: float = 0.0
    """Requests per second per API key (0: no limit); bursts up to `rate_limit_burst`."""
    rate_limit_burst: float = 50.0
    otlp_endpoint: str = ""
    """OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces); empty: no tracing."""
    json_logs: bool = True
    """One JSON object per log line (for log shippers); false for plain text."""
    host: str = "127.0.0.1"
    port: int = 8000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        """Defaults overridden by FRAUD_SERVING_<FIELD> variables (e.g. FRAUD_SERVING_PORT)."""
        return settings_from_env(cls, PREFIX, environ)
