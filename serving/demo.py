"""`make demo`, REST part: serve the published champion and score a few transactions."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import msgspec
import pyarrow.compute as pc
import pyarrow.dataset as ds
import uvicorn
from rich.console import Console
from rich.table import Table

from fraud_core.landing import read_landing
from serving.app import create_app
from serving.online_loader import load_online_state
from serving.settings import ServingSettings

console = Console()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(folder: str) -> tuple[subprocess.Popen[bytes] | None, str]:
    if shutil.which("redis-server") is None:
        return None, ""
    port = _free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    import redis

    while True:
        try:
            if redis.Redis.from_url(url).ping():
                return process, url
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


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
    with tempfile.TemporaryDirectory() as folder:
        redis_process, redis_url = _start_redis(folder)
        if redis_url:
            cards, merchants = load_online_state(history.slice(0, pick), redis_url)
            console.print(
                f"online store: {cards:,} card and {merchants:,} merchant states in Redis"
            )
        else:
            console.print("[yellow]no redis-server: scoring every card as new[/yellow]")
        port = _free_port()
        settings = ServingSettings(model_store_dir=models, redis_url=redis_url, port=port)
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        table = Table(title=f"POST {base}/v1/score")
        for column in (
            "transaction",
            "card",
            "amount",
            "fraud",
            "score",
            "decision",
            "top reason",
            "µs",
        ):
            table.add_column(column)
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
        server.should_exit = True
        thread.join(timeout=10)
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
