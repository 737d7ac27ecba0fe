"""Settings of the stream workers, from FRAUD_STREAM_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from fraud_core.settings import settings_from_env

PREFIX = "FRAUD_STREAM_"

CARD_TABLE = "card_to_state"
"""The card table (partitioned like the transactions topic, by card_id)."""
MERCHANT_TABLE = "merchant_to_risk"
"""The merchant table (global; its changelog partitioned like the labels topic)."""

TABLE_STORES = {"memory": "memory://", "rocksdb": "rocksdb://"}
"""FRAUD_STREAM_TABLE_STORE's choices and Faust's store URL for each."""


class StreamSettings(msgspec.Struct, frozen=True, kw_only=True):
    broker: str = "127.0.0.1:9092"
    """Kafka bootstrap servers; KAFKA_BOOTSTRAP_SERVERS, when set, takes precedence."""
    app_id: str = "fraudscale-stream"
    """Consumer group and prefix of the table changelog topics; workers sharing it split work."""
    topic_prefix: str = "fraudscale"
    """Topics are <prefix>.transactions, .labels, .scores, .alerts, .dead-letters and
    .decisions."""
    partitions: int = 4
    """Partitions of the topics the app creates; the most workers that can share the load."""
    replication_factor: int = 1
    """Replicas of each topic the app creates (3 on a production cluster); with more than one,
    each topic also requires `replication_factor - 1` replicas in sync for a write
    (min.insync.replicas: 2 of 3), so an acknowledged output survives a broker's death."""
    model_store_dir: str = "data/models"
    """The local model store the asset graph publishes to (its role pointers CHAMPION, CANARY
    and CHALLENGER are watched)."""
    model_poll_seconds: float = 1.0
    """How often the store's pointers are checked for a new publication or rollout step."""
    redis_url: str = ""
    """Where card and merchant states are written for the REST service, e.g.
    redis://127.0.0.1:6379/0, redis+sentinel://h1:26379,h2:26379/<service>[/db] (the
    primary those Sentinels name) or redis+cluster://h1:6379,h2:6379 (a Redis Cluster);
    empty: the stream keeps them in its tables only."""
    batch_max: int = 500
    """Most transactions scored in one onnxruntime call."""
    batch_wait_ms: float = 5.0
    """Longest a batch of labels waits to fill (transactions are taken as they are fetched)."""
    reasons: int = 3
    """How many top reasons each score carries."""
    decision_log: bool = True
    """Write every decision (every role's, the challenger's shadow scores included) to
    <prefix>.decisions, keyed by transaction id, with the batch's other outputs."""
    shadow_sample: float = 1.0
    """Share of transactions (by a hash of the transaction id) the challenger scores in
    shadow, when one is published and the decision log is on."""
    table_store: str = "memory"
    """Where a worker keeps its tables: "memory" (rebuilt from the changelog topics on every
    start: a laptop's choice) or "rocksdb" (Faust's RocksDB store through rocksdict, on disk
    under `data_dir`: a worker's memory stays flat as cards grow, and a restarted worker with
    its folder reads only the changelog written since)."""
    rocksdb_cache_mb: int = 64
    """With the RocksDB store: each table partition's block cache (RocksDB's read cache)."""
    data_dir: str = ".faust"
    """This worker's own local folder (Faust's table stores and offsets). Workers on one
    machine need one each; a restarted worker (a pod with its volume) finds its folder again
    here, whatever web port it gets."""
    web_port: int = 6066
    """Each worker binds its own port (Faust's web server: /metrics and the worker's status)."""
    session_timeout_seconds: float = 10.0
    """How long the group waits for a silent worker before its partitions move elsewhere."""
    metadata_refresh_seconds: float = 5.0
    """How often a worker re-reads the cluster's topic metadata. A worker that joins its group
    before the broker lists an input topic it has just created owns none of its partitions
    until the next refresh, as does a group after partitions are added to a topic."""
    shutdown_seconds: float = 10.0
    """After SIGTERM/SIGINT, the longest a worker spends on a clean shutdown (finishing the
    batches it has begun, the final commit, leaving the group) before it exits anyway, e.g.
    when the broker is gone. A clean shutdown leaves nothing to score twice; one cut short
    loses nothing either: uncommitted input is processed again by whoever gets the
    partitions."""
    log_level: str = "info"
    kill_at: str = ""
    """Fault injection for tests: "<step>:<n>" makes the worker SIGKILL itself right after
    step <step> (score, produce, changelog, flush, acknowledge) of its n-th batch
    (streaming.checkpoint). Empty in production."""

    def __post_init__(self) -> None:
        if self.table_store not in TABLE_STORES:
            raise ValueError(
                f"FRAUD_STREAM_TABLE_STORE={self.table_store!r}: one of {sorted(TABLE_STORES)}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StreamSettings:
        """Defaults overridden by FRAUD_STREAM_<FIELD> variables (e.g. FRAUD_STREAM_WEB_PORT)."""
        env = os.environ if environ is None else environ
        settings = settings_from_env(cls, PREFIX, env)
        bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS")
        return msgspec.structs.replace(settings, broker=bootstrap) if bootstrap else settings

    def topic_config(self) -> dict[str, str]:
        """Settings of every topic the app creates (its own and its tables' changelogs)."""
        if self.replication_factor <= 1:
            return {}
        return {"min.insync.replicas": str(self.replication_factor - 1)}

    def store_url(self) -> str:
        """Faust's table store URL for `table_store`."""
        return TABLE_STORES[self.table_store]

    def table_options(self) -> dict[str, int]:
        """Faust's options for each table's store: RocksDB's buffers and cache, sized for many
        partitions per worker (Faust's defaults are a 2 GB cache and 3 x 64 MB write buffers
        per partition)."""
        if self.table_store != "rocksdb":
            return {}
        mb = 1024 * 1024
        return {
            "block_cache_size": self.rocksdb_cache_mb * mb,
            "write_buffer_size": 16 * mb,
            "max_write_buffer_number": 2,
        }

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    def changelog(self, table: str) -> str:
        """The changelog topic Faust keeps `table` in."""
        return f"{self.app_id}-{table}-changelog"
