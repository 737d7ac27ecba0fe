"""The Faust app of the stream workers: `python -m streaming worker` runs one.

Workers sharing FRAUD_STREAM_APP_ID form one consumer group and split the partitions; each
needs its own FRAUD_STREAM_WEB_PORT. Tables live in memory and are rebuilt from their
changelog topics on start and when partitions move between workers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import faust

from fraud_core.model_store import ModelHolder, ModelStore
from streaming.settings import StreamSettings

settings = StreamSettings.from_env()
log = logging.getLogger("streaming")
datadir = Path(settings.data_dir) / f"worker-{settings.web_port}"
datadir.mkdir(parents=True, exist_ok=True)

app = faust.App(
    settings.app_id,
    broker=";".join(f"kafka://{server}" for server in settings.broker.split(",")),
    store="memory://",
    datadir=str(datadir),
    web_host="127.0.0.1",
    web_port=settings.web_port,
    web_bind="127.0.0.1",
    topic_partitions=settings.partitions,
    topic_replication_factor=1,
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=settings.session_timeout_seconds,
    broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
    broker_commit_every=1000,
    broker_commit_interval=1.0,
    producer_acks=-1,
    producer_linger=0.005,
    stream_wait_empty=False,
    table_standby_replicas=0,
)

models = ModelHolder(ModelStore(settings.model_store_dir))
"""The published champion; every batch takes `models.current` once and scores with it."""

# Registers the topics, tables, agents, timers and the /metrics page with `app`.
from streaming import agents  # noqa: E402, F401
