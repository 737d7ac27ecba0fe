"""Stream state at scale: a worker's memory and a group's takeover time, with the tables in
memory (the default) and in RocksDB (FRAUD_STREAM_TABLE_STORE=rocksdb), for N cards with D
days of history each.

The history is replayed once (the warm start's `end_states`) and written to the tables'
changelogs; then, for each store, on one real broker:

1. One worker starts on an empty data folder and restores every partition; "ready" is the
   time from its start until a probe transaction sent to each partition is scored (Faust
   scores nothing of a partition before its tables are restored). Its resident memory (RSS)
   is read then.
2. A second worker joins: the group splits the partitions, and each worker also keeps a
   standby copy of the other's (`table_standby_replicas=1`). Both workers' RSS once probes
   on every partition are scored again.
3. The first worker is SIGKILLed: "takeover" is the time from the kill until a probe on
   every partition is scored by the survivor (the session timeout, 10 s, bounds the group's
   detection of the death; the standby copy spares a restore).

RocksDB's folder sizes are reported too. Memory is what a worker needs, not a timing: it
does not move with the machine's speed.

    uv run python -m bench.stream_state --cards 1000000 --days 7   # the issue's size
    uv run python -m bench.stream_state --cards 50000 --days 7     # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from bench import record_result
from bench.batch import make_model, tree_rss_bytes
from fraud_core.features import DAY_US
from fraud_core.model_store import ModelStore
from fraud_core.outbox import key_partition
from fraud_core.schema import from_micros, timestamps_us
from fraud_core.state import end_states
from fraud_data.landing import read_landing
from fraud_data.simulator import SimulationConfig, generate
from fraud_devtools.kafka import LocalKafka
from fraud_devtools.processes import wait_until
from fraud_devtools.stream_workers import LocalWorker, consume, produce, transaction_records
from streaming.settings import StreamSettings
from streaming.warm import write_tables

console = Console()
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
_probes = itertools.count()


@dataclass(frozen=True)
class StoreRun:
    store: str
    ready_seconds: float
    rss_one_mb: float
    rss_two_mb: tuple[float, float]
    takeover_seconds: float
    disk_mb: float


def rss_mb(worker: LocalWorker) -> float:
    """The worker process's resident memory now, in MB."""
    assert worker.process is not None
    return tree_rss_bytes(worker.process.pid) / 2**20


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def probe_rows(history: pa.Table, partitions: int, after_us: int) -> pa.Table:
    """One new transaction for a known card of each partition, just after the history."""
    cards = history.column("card_id").to_pylist()
    picked: dict[int, int] = {}
    for i, card in enumerate(cards):
        picked.setdefault(key_partition(card.encode(), partitions), i)
        if len(picked) == partitions:
            break
    rows = history.take(pa.array(sorted(picked.values())))
    n = next(_probes)
    ids = [f"probe-{n}-{i}" for i in range(rows.num_rows)]
    times = [from_micros(after_us + 1000 * (n * partitions + i)) for i in range(rows.num_rows)]
    rows = rows.set_column(rows.schema.get_field_index("transaction_id"), "transaction_id",
                           pa.array(ids))  # fmt: skip
    stamp = pa.array(times, type=rows.schema.field("timestamp").type)
    return rows.set_column(rows.schema.get_field_index("timestamp"), "timestamp", stamp)


def probe(bootstrap: str, prefix: str, rows: pa.Table, timeout: float = 900) -> None:
    """Send the probes and wait until every one is scored."""
    asyncio.run(produce(bootstrap, f"{prefix}.transactions", transaction_records(rows)))
    ids = {tid.encode() for tid in rows.column("transaction_id").to_pylist()}

    async def scored() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = await consume(bootstrap, f"{prefix}.scores", timeout=timeout)
            if ids <= {r.key for r in records}:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"probes not scored within {timeout} s")

    asyncio.run(scored())


def run_store(
    store: str, work: Path, env: dict[str, str], history: pa.Table, partitions: int, end_us: int
) -> StoreRun:
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    prefix = f"state-{store}-{int(time.time())}"
    folder = work / "run" / store
    env = {**env, "FRAUD_STREAM_TABLE_STORE": store, "FRAUD_STREAM_TOPIC_PREFIX": prefix}
    first, second = (LocalWorker(folder, env) for _ in range(2))
    try:
        started = time.monotonic()
        first.start(timeout=900)
        probe(bootstrap, prefix, probe_rows(history, partitions, end_us))
        ready = time.monotonic() - started
        rss_one = rss_mb(first)
        console.print(f"{store}: one worker ready in {ready:.1f} s, RSS {rss_one:,.0f} MB")

        second.start(timeout=900)
        wait_until(
            lambda: [w.metric("fraudscale_stream_assigned_partitions") for w in (first, second)]
            == [partitions // 2] * 2,
            "the group to split the partitions", 900,
        )  # fmt: skip
        probe(bootstrap, prefix, probe_rows(history, partitions, end_us))
        time.sleep(10)  # standbys catch up
        rss_two = (rss_mb(first), rss_mb(second))
        console.print(f"{store}: two workers, RSS {rss_two[0]:,.0f} / {rss_two[1]:,.0f} MB")

        killed = time.monotonic()
        first.kill()
        probe(bootstrap, prefix, probe_rows(history, partitions, end_us))
        takeover = time.monotonic() - killed
        console.print(f"{store}: takeover in {takeover:.1f} s")
        disk = folder_mb(folder) if store == "rocksdb" else 0.0
        return StoreRun(store, ready, rss_one, rss_two, takeover, disk)
    finally:
        first.kill()
        second.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7, help="days of history per card")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--stores", default="memory,rocksdb")
    parser.add_argument("--workdir", type=Path, default=Path("data/bench/stream_state"))
    parser.add_argument("--log-level", default="warn", help="the workers' (their logs: workdir)")
    args = parser.parse_args()
    work: Path = args.workdir
    shutil.rmtree(work / "run", ignore_errors=True)
    raw = work / f"raw-{args.cards}-{args.days}"
    if not raw.exists():
        console.print(f"generating {args.days} days of {args.cards:,} cards into {raw}")
        config = SimulationConfig(
            days=args.days, cards=args.cards, merchants=max(500, args.cards // 100), seed=11
        )
        generate(config, raw)
    history = read_landing(raw).sort_by("timestamp")
    ts = timestamps_us(history.column("timestamp"))
    end_us = (int(ts.max()) // DAY_US + 1) * DAY_US
    t0 = time.perf_counter()
    cards, merchants = end_states(history, end_us)
    replayed = time.perf_counter() - t0
    kept = int(sum(len(c.ts) for c in cards.values()))
    console.print(
        f"{history.num_rows:,} transactions replayed in {replayed:.0f} s: {len(cards):,} cards "
        f"({kept / len(cards):.1f} transactions kept each), {len(merchants):,} merchants"
    )
    store = ModelStore(work / "run" / "models")
    store.publish(make_model(work))

    broker = LocalKafka(work / "run" / "kafka")
    broker.start()
    runs = []
    try:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "FRAUD_STREAM_MODEL_STORE_DIR": str(store.root),
            "FRAUD_STREAM_LOG_LEVEL": args.log_level,
            "FRAUD_STREAM_APP_ID": "state",
            "FRAUD_STREAM_PARTITIONS": str(args.partitions),
        }
        settings = StreamSettings.from_env(env)
        t0 = time.perf_counter()
        asyncio.run(write_tables(settings, cards, merchants))
        console.print(f"changelogs written in {time.perf_counter() - t0:.0f} s")
        del cards, merchants
        for name in args.stores.split(","):
            runs.append(run_store(name, work, env, history, args.partitions, end_us))
    finally:
        broker.stop()

    table = Table(
        title=f"stream state: {len(history):,} transactions, {args.cards:,} cards, "
        f"{args.days} days, {args.partitions} partitions"
    )
    for column in ("table store", "1 worker ready", "RSS, 1 worker", "RSS, each of 2",
                   "takeover after SIGKILL", "RocksDB on disk"):  # fmt: skip
        table.add_column(column, justify="right")
    for run in runs:
        table.add_row(
            run.store, f"{run.ready_seconds:.1f} s", f"{run.rss_one_mb:,.0f} MB",
            " / ".join(f"{m:,.0f} MB" for m in run.rss_two_mb),
            f"{run.takeover_seconds:.1f} s",
            f"{run.disk_mb:,.0f} MB" if run.disk_mb else "-",
        )  # fmt: skip
    console.print(table)
    record_result(
        "stream_state",
        {
            "cards": args.cards,
            "days": args.days,
            "transactions": history.num_rows,
            "partitions": args.partitions,
            "runs": [run.__dict__ for run in runs],
        },
    )


if __name__ == "__main__":
    main()
