"""`make demo`, REST part: serve the published champion and score a few transactions."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import httpx
import msgspec
import pyarrow.compute as pc
import pyarrow.dataset as ds
from rich.console import Console
from rich.table import Table

from fraud_core.model_store import ModelStore
from fraud_core.online_store import load_history
from fraud_data.landing import read_landing
from fraud_devtools.redis_server import LocalRedis
from fraud_devtools.rest_server import running_server
from serving.app import create_app
from serving.settings import ServingSettings

console = Console()


def main(
    landing: str = "data/landing", warehouse: str = "data/warehouse", models: str = "data/models"
) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    history = read_landing(landing).sort_by("timestamp")
    # The batch path's top alert: the REST path should agree, given the same card history.
    alerts = ds.dataset(Path(warehouse) / "fraud_alerts", format="parquet").to_table()
    top = alerts.sort_by([("score", "descending")]).column("transaction_id")[0]
    pick = pc.index(history.column("transaction_id"), top).as_py()
    chosen = history.slice(pick, 4).to_pylist()
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        redis_url = ""
        if shutil.which("redis-server"):
            local_redis = LocalRedis(Path(folder))
            local_redis.start()
            stack.callback(local_redis.kill)
            redis_url = local_redis.url
            delay = ModelStore(models).load_champion().metadata.contract.label_delay_us
            cards, merchants = load_history(history.slice(0, pick), redis_url, delay)
            console.print(
                f"online store: {cards:,} card and {merchants:,} merchant states in Redis"
            )
        else:
            console.print("[yellow]no redis-server: scoring every card as new[/yellow]")
        settings = ServingSettings(model_store_dir=models, redis_url=redis_url)
        base = "http://" + stack.enter_context(running_server(create_app(settings)))
        table = Table(title=f"POST {base}/v1/score")
        for column in ("transaction", "card", "amount", "fraud", "score", "decision"):
            table.add_column(column)
        table.add_column("top reason")
        table.add_column("µs")
        for row in [*chosen, chosen[0]]:
            payload = {k: v for k, v in row.items() if k != "is_fraud"}
            payload["timestamp"] = row["timestamp"].isoformat()
            answer = httpx.post(f"{base}/v1/score", content=msgspec.json.encode(payload)).json()
            table.add_row(
                row["transaction_id"] + (" (retry)" if answer["cached"] else ""),
                row["card_id"], f"{row['amount']:.2f}", str(row["is_fraud"]),
                f"{answer['score']:.4f}", answer["decision"], answer["reasons"][0],
                str(answer["server_time_us"]),
            )  # fmt: skip
        console.print(table)
        ready = httpx.get(f"{base}/v2/health/ready").json()
        console.print(f"ready: {ready}; metrics at {base}/metrics; API docs at {base}/docs")
        console.print("run it yourself: make serve  (FRAUD_SERVING_* settings, see README)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
