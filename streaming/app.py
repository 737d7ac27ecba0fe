"""The Faust app of the stream workers: `python -m streaming worker` runs one.

Workers sharing FRAUD_STREAM_APP_ID form one consumer group and split the partitions; each
needs its own FRAUD_STREAM_WEB_PORT. Tables live in memory and are rebuilt from their
changelog topics on start and when partitions move between workers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import faust

from fraud_core.features import warm_up
from fraud_core.model_store import ModelHolder, ModelStore
from streaming.delivery import App
from streaming.settings import StreamSettings

settings = StreamSettings.from_env()
log = logging.getLogger("streaming")
datadir = Path(settings.data_dir)
datadir.mkdir(parents=True, exist_ok=True)


class Worker(faust.Worker):
    """Faust's worker with a deadline on shutdown (`FRAUD_STREAM_SHUTDOWN_SECONDS`) and
    without the terminal spinner."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # Faust's terminal spinner sets the root logger to DEBUG whenever the level is WARN or
        # above, so every library debug call (aiokafka logs each send) builds a log record:
        # ~10 % of a busy worker's CPU. A worker's output is a log, not a terminal.
        self.spinner = None
        super().on_setup_root_logger(logger, level)

    def _on_sigterm(self) -> None:
        _exit_after(settings.shutdown_seconds)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        _exit_after(settings.shutdown_seconds)
        super()._on_sigint()


def _exit_after(seconds: float) -> None:
    def deadline() -> None:
        time.sleep(seconds)
        log.error("clean shutdown took over %gs (broker unreachable?); exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=deadline, name="shutdown-deadline", daemon=True).start()


app = App(
    settings.app_id,
    broker=";".join(f"kafka://{server}" for server in settings.broker.split(",")),
    store="memory://",
    datadir=str(datadir),
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
    table_standby_replicas=1,  # a peer keeps each partition's table warm for takeover
    Worker=Worker,
)

warm_up()

models = ModelHolder(ModelStore(settings.model_store_dir))
"""The published champion; every batch takes `models.current` once and scores with it."""
models.refresh()

# Registers the topics, tables, agents, timers and the /metrics page with `app`.
from streaming import agents  # noqa: E402, F401
