"""`make demo`, stream part: a real Kafka broker and a Faust worker score the last simulated day.

Labels known before that day go to the labels topic first (merchant risk), then the day's
transactions (plus two broken records, which end up in the dead-letter topic) in time order.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
from rich.console import Console
from rich.table import Table

from fraud_core.features import DAY_US, LABEL_DELAY_US
from fraud_core.landing import read_landing
from fraud_core.local import LocalRedis, wait_until
from fraud_core.schema import timestamps_us
from streaming.broker import LocalKafka
from streaming.local import LocalWorker, consume, label_records, produce, transaction_records
from streaming.scoring import Alert

console = Console()
# aiokafka logs an ERROR while a topic it produces to is still being created: noise here.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def main(landing: str = "data/landing", models: str = "data/models") -> int:
    history = read_landing(landing).sort_by("timestamp")
    ts = timestamps_us(history.column("timestamp"))
    day_start = (int(ts.max()) // DAY_US) * DAY_US
    day = history.slice(int(np.searchsorted(ts, day_start)))
    known = history.slice(0, int(np.searchsorted(ts, day_start - LABEL_DELAY_US)))
    with tempfile.TemporaryDirectory() as folder:
        broker = LocalKafka(Path(folder) / "kafka")
        redis = LocalRedis(Path(folder))
        broker.start()
        redis.start()
        worker = LocalWorker(
            Path(folder),
            {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "FRAUD_STREAM_MODEL_STORE_DIR": models,
                "FRAUD_STREAM_REDIS_URL": redis.url,
                "FRAUD_STREAM_LOG_LEVEL": "warn",
            },
        )
        try:
            console.print(f"Kafka broker on {broker.bootstrap}; Redis on {redis.url}")
            worker.start()
            console.print(f"stream worker up, /metrics on http://127.0.0.1:{worker.web_port}")
            labels = asyncio.run(
                produce(broker.bootstrap, "fraudscale.labels", label_records(known))
            )
            wait_until(
                lambda: worker.metric("fraudscale_stream_labels_total") >= labels, "labels", 120
            )
            records = transaction_records(day)
            broken = [(b"c-1", b'{"card_id": "c-1", "amount": "twelve"}'), (b"c-2", b"{oops")]
            started = time.perf_counter()
            sent = asyncio.run(
                produce(broker.bootstrap, "fraudscale.transactions", records + broken)
            )
            scores = asyncio.run(
                consume(
                    broker.bootstrap, "fraudscale.scores", until=len(records),
                    timeout=600, distinct_keys=True,
                )
            )  # fmt: skip
            elapsed = time.perf_counter() - started
            alerts = asyncio.run(
                consume(broker.bootstrap, "fraudscale.alerts", until=10**9, timeout=3)
            )
            dead = asyncio.run(
                consume(broker.bootstrap, "fraudscale.dead-letters", until=len(broken))
            )
        finally:
            worker.stop()
            redis.kill()
            broker.stop()

    frauds = dict(
        zip(day.column("transaction_id").to_pylist(), day.column("is_fraud").to_pylist(),
            strict=True)
    )  # fmt: skip
    decoded = [msgspec.json.decode(a.value, type=Alert) for a in alerts]
    caught = sum(frauds.get(a.transaction.transaction_id, False) for a in decoded)
    console.print(
        f"{labels:,} labels, then {sent:,} records ({len(broken)} broken) in; "
        f"{len(scores):,} scores out in {elapsed:.1f} s ({len(scores) / elapsed:,.0f}/s "
        f"end to end, produce included); {len(decoded)} alerts, {caught} of them confirmed "
        f"fraud; {len(dead)} dead letters"
    )
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
    return 0 if len(scores) == len(records) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
