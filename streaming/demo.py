"""`make demo`, stream part: a real Kafka broker and a Faust worker score the last simulated
day, warm from the history before it, and agree with the batch path on every transaction.

1. Warm start (streaming.warm): every card's and merchant's state before the last day goes
   into the tables' changelogs and Redis; nothing is scored.
2. A worker starts and restores those tables; the labels that become known during the day go
   to the labels topic, then the day's transactions (plus two broken records, which end up in
   the dead-letter topic) in time order.
3. Each stream score the champion gave is compared with the batch path's
   `scored_transactions` of that day (the canary, when one is published, answers its share
   of cards with its own model).
4. With the broker still up, the asset graph reads the day's decision log from Kafka and
   prints the rollout verdict (`python -m fraud_assets.demo verdict DAY`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
import pyarrow.dataset as ds
from rich.console import Console
from rich.table import Table

from fraud_core.features import DAY_US
from fraud_core.rollout import CHAMPION
from fraud_core.schema import from_micros, timestamps_us
from fraud_core.scoring import Score
from fraud_devtools.kafka import LocalKafka
from fraud_devtools.processes import wait_until
from fraud_devtools.redis_server import LocalRedis
from fraud_devtools.stream_workers import (
    LocalWorker,
    consume,
    label_records,
    produce,
    transaction_records,
    wait_for_group,
)
from streaming.scoring import Alert
from streaming.settings import StreamSettings
from streaming.warm import champion_label_delay, history_until, report, warm_start

console = Console()
# aiokafka logs an ERROR while a topic it produces to is still being created: noise here.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def batch_scores(warehouse: Path, day: str) -> dict[str, float]:
    """The batch path's score of each transaction of `day` (scored_transactions)."""
    folder = warehouse / "scored_transactions" / f"day={day}"
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table(
        columns=["transaction_id", "score"]
    )
    return dict(zip(table["transaction_id"].to_pylist(), table["score"].to_pylist(), strict=True))


def agreement(stream: dict[str, float], batch: dict[str, float], threshold: float) -> Table:
    """Stream against batch for every transaction of the day."""
    common = sorted(stream.keys() & batch.keys())
    s = np.asarray([stream[t] for t in common], dtype=np.float32)
    b = np.asarray([batch[t] for t in common], dtype=np.float32)
    cut = np.float32(threshold)
    table = Table(title="stream vs batch, every transaction the champion answered")
    for column in ("compared", "stream only", "batch only", "max |Δ|",
                   "alerts stream", "alerts batch", "in both"):  # fmt: skip
        table.add_column(column, justify="right")
    table.add_row(
        f"{len(common):,}", f"{len(stream.keys() - batch.keys()):,}",
        f"{len(batch.keys() - stream.keys()):,}",
        f"{float(np.abs(s - b).max()) if common else 0.0:.3g}",
        f"{int((s >= cut).sum()):,}", f"{int((b >= cut).sum()):,}",
        f"{int(((s >= cut) & (b >= cut)).sum()):,}",
    )  # fmt: skip
    return table


def main(
    landing: str = "data/landing", models: str = "data/models", warehouse: str = "data/warehouse"
) -> int:
    history, end_us, _ = history_until(landing, None)
    day_start = end_us - DAY_US
    ts = timestamps_us(history.column("timestamp"))
    day = history.slice(int(np.searchsorted(ts, day_start)))
    day_name = from_micros(day_start).date().isoformat()
    with tempfile.TemporaryDirectory() as folder:
        broker = LocalKafka(Path(folder) / "kafka")
        redis = LocalRedis(Path(folder))
        broker.start()
        redis.start()
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "FRAUD_STREAM_MODEL_STORE_DIR": models,
            "FRAUD_STREAM_REDIS_URL": redis.url,
            "FRAUD_STREAM_LOG_LEVEL": "warn",
        }
        worker = LocalWorker(Path(folder), env)
        try:
            console.print(f"Kafka broker on {broker.bootstrap}; Redis on {redis.url}")
            settings = StreamSettings.from_env(env)
            warmed = warm_start(settings, landing, day_start)
            console.print(
                f"warm start: {warmed.rows:,} transactions before {day_name} replayed into "
                f"{warmed.cards:,} card and {warmed.merchants:,} merchant states, no scores"
            )
            console.print(report(warmed))
            worker.start()
            console.print(f"stream worker up, /metrics on http://127.0.0.1:{worker.web_port}")
            labels = asyncio.run(
                produce(broker.bootstrap, "fraudscale.labels",
                        label_records(history, day_start, end_us, champion_label_delay(settings)))
            )  # fmt: skip
            wait_until(
                lambda: worker.metric("fraudscale_stream_labels_total") >= labels, "labels", 120
            )
            records = transaction_records(day)
            broken = [(b"c-1", b'{"card_id": "c-1", "amount": "twelve"}'), (b"c-2", b"{oops")]
            started = time.perf_counter()
            sent = asyncio.run(
                produce(broker.bootstrap, "fraudscale.transactions", records + broken)
            )
            scored = asyncio.run(
                consume(
                    broker.bootstrap, "fraudscale.scores", until=len(records),
                    timeout=600, distinct_keys=True,
                )
            )  # fmt: skip
            elapsed = time.perf_counter() - started
            asyncio.run(
                wait_for_group(broker.bootstrap, settings.app_id, "fraudscale.transactions")
            )
            alerts = asyncio.run(consume(broker.bootstrap, "fraudscale.alerts"))
            dead = asyncio.run(
                consume(broker.bootstrap, "fraudscale.dead-letters", until=len(broken))
            )
            judged = subprocess.run(
                [sys.executable, "-m", "fraud_assets.demo", "verdict", day_name],
                env={**os.environ, "FRAUD_ASSETS_DECISION_LOG_BOOTSTRAP": broker.bootstrap},
                check=False,
            )
        finally:
            worker.stop()
            redis.kill()
            broker.stop()

    scores = [msgspec.json.decode(r.value, type=Score) for r in scored]
    stream = {s.transaction_id: s.score for s in scores}
    frauds = dict(zip(day["transaction_id"].to_pylist(), day["is_fraud"].to_pylist(), strict=True))
    decoded = [msgspec.json.decode(a.value, type=Alert) for a in alerts]
    caught = sum(frauds.get(a.transaction.transaction_id, False) for a in decoded)
    console.print(
        f"{labels:,} labels known during {day_name}, then {sent:,} records ({len(broken)} "
        f"broken) in; {len(stream):,} scores out in {elapsed:.1f} s "
        f"({len(stream) / elapsed:,.0f}/s end to end, produce included); {len(decoded)} "
        f"alerts, {caught} of them confirmed fraud; {len(dead)} dead letters"
    )
    champion = [s for s in scores if s.role == CHAMPION]
    threshold = champion[0].threshold if champion else 1.0
    batch = batch_scores(Path(warehouse), day_name)
    answered = {s.transaction_id: s.score for s in champion}
    canary = len(scores) - len(champion)
    if canary:
        console.print(
            f"{canary:,} transactions answered by the canary "
            f"{next(s.model_version for s in scores if s.role != CHAMPION)}, "
            f"{len(champion):,} by the champion (compared with the batch path below)"
        )
    console.print(agreement(answered, {t: batch[t] for t in answered if t in batch}, threshold))
    table = Table(title="top alerts from the stream")
    for column in ("transaction", "card", "amount", "score", "fraud", "reasons"):
        table.add_column(column)
    for alert in sorted(decoded, key=lambda a: -a.score.score)[:5]:
        t = alert.transaction
        table.add_row(
            t.transaction_id, t.card_id, f"{t.amount:,.2f}", f"{alert.score.score:.3f}",
            str(frauds.get(t.transaction_id)), ", ".join(alert.score.reasons),
        )  # fmt: skip
    console.print(table)
    for letter in dead:
        headers = dict(letter.headers)
        console.print(
            f"dead letter {letter.value[:40]!r}: {headers['error.field'].decode()!r} "
            f"{headers['error.reason'].decode()}"
        )
    agree = stream.keys() == batch.keys() and all(
        abs(answered[t] - batch[t]) <= 1e-6 for t in answered
    )
    return 0 if len(stream) == len(records) and agree and judged.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
