"""The Faust app of the stream workers: `python -m streaming worker` runs one.

`create_app(settings)` builds it, with its topics, tables and work; importing this module
does nothing else. Workers sharing FRAUD_STREAM_APP_ID form one consumer group and split the
partitions; each needs its own FRAUD_STREAM_WEB_PORT and FRAUD_STREAM_DATA_DIR. Tables live in
memory and are rebuilt from their changelog topics on start and when partitions move between
workers, or with FRAUD_STREAM_TABLE_STORE=rocksdb in RocksDB under the data folder.
"""

from __future__ import annotations

from pathlib import Path

from fraud_core.features import warm_up
from fraud_core.model_store import ModelHolder, ModelStore
from fraud_core.outbox import RECORD_BATCH_BYTES
from streaming.agents import StreamWork
from streaming.faust_overrides import App, Worker, check_faust_version
from streaming.settings import StreamSettings
from streaming.tables import declare_tables
from streaming.topics import declare_topics


def create_app(settings: StreamSettings) -> App:
    """A worker's Faust app for `settings`, its published model loaded."""
    check_faust_version()
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    app = App(
        settings.app_id,
        broker=";".join(f"kafka://{server}" for server in settings.broker.split(",")),
        store=settings.store_url(),
        datadir=settings.data_dir,
        web_host="127.0.0.1",
        web_port=settings.web_port,
        web_bind="127.0.0.1",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
        consumer_metadata_max_age_ms=int(settings.metadata_refresh_seconds * 1000),
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        producer_acks=-1,
        producer_linger=0.005,
        producer_max_batch_size=RECORD_BATCH_BYTES,  # a batch's outputs in few record batches
        table_standby_replicas=1,  # a peer keeps each partition's table warm for takeover
        Worker=Worker,
    )
    app.shutdown_seconds = settings.shutdown_seconds
    warm_up()
    models = ModelHolder(ModelStore(settings.model_store_dir))
    models.refresh()  # every batch takes `models.served` once and scores with it
    topics, tables = declare_topics(app, settings), declare_tables(app, settings)
    StreamWork(app, settings, topics, tables, models).register()
    return app
