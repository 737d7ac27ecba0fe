"""Stream workers as child processes, and feeding/reading topics: for the demo, bench and tests."""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec
import pyarrow as pa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from fraud_core.features import DEFAULT_LABEL_DELAY_US
from fraud_core.schema import from_micros, timestamps_us
from fraud_core.state import label_times_us
from fraud_devtools.processes import LocalProcess, free_port, start_process

_json = msgspec.json.Encoder()


class LocalWorker(LocalProcess):
    """`python -m streaming worker` in a child process, with FRAUD_STREAM_* settings.

    `start` returns once the worker owns partitions and its output topics exist."""

    def __init__(
        self,
        folder: Path,
        env: Mapping[str, str],
        web_port: int | None = None,
        cpus: str | None = None,
    ) -> None:
        """`cpus`: run the worker on these cores only (taskset's list; benchmarks)."""
        self.folder, self.cpus = folder, cpus
        self.web_port = web_port or free_port()
        self.env = {
            **os.environ,
            "FRAUD_STREAM_DATA_DIR": str(folder / f"faust-{self.web_port}"),
            **env,
            "FRAUD_STREAM_WEB_PORT": str(self.web_port),
        }
        self.log_path = folder / f"worker-{self.web_port}.log"

    def start(self, timeout: float = 60) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        level = self.env.get("FRAUD_STREAM_LOG_LEVEL", "info")
        pin = ["taskset", "-c", self.cpus] if self.cpus else []
        self.process = start_process(
            [*pin, sys.executable, "-m", "streaming", "worker", "--loglevel", level],
            f"the stream worker on port {self.web_port}",
            lambda: self.metric("fraudscale_stream_assigned_partitions") > 0,
            timeout,
            log=self.log_path,
            env=self.env,
        )

    def metrics(self) -> str | None:
        """The worker's /metrics page, or None while it does not answer."""
        try:
            url = f"http://127.0.0.1:{self.web_port}/metrics"
            with urllib.request.urlopen(url, timeout=1) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def metric(self, name: str) -> float:
        """The value of one unlabelled counter or gauge on /metrics (0 when absent)."""
        for line in (self.metrics() or "").splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def log_digest(self, tail: int = 30) -> str:
        """The log's warnings, errors, rebalances and recovery steps, then its last lines."""
        marks = ("[WARNING]", "[ERROR]", "[CRITICAL]", "generation", "Recovery]: ", "Traceback")
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log: {exc})"
        picked = [line for line in lines[:-tail] if any(m in line for m in marks)]
        return "\n".join([*picked, "...", *lines[-tail:]])


def transaction_records(table: pa.Table) -> list[tuple[bytes, bytes]]:
    """(card_id key, JSON value) per row of a transaction table, in row order."""
    ts = timestamps_us(table.column("timestamp"))
    extra = [c for c in ("timestamp", "is_fraud") if c in table.column_names]
    rows = table.drop_columns(extra).to_pylist()
    out = []
    for row, t in zip(rows, ts, strict=True):
        row["timestamp"] = from_micros(int(t))
        out.append((row["card_id"].encode(), _json.encode(row)))
    return out


def label_records(
    table: pa.Table,
    since_us: int | None = None,
    until_us: int | None = None,
    label_delay_us: int = DEFAULT_LABEL_DELAY_US,
) -> list[tuple[bytes, bytes]]:
    """(merchant_id key, JSON LabelEvent) per labelled row (null labels are none), known at
    its label time (fraud_core.state.label_times_us), in row order; only those known in
    [since_us, until_us) when given."""
    out = []
    for tid, merchant, fraud, known_us in zip(
        table.column("transaction_id").to_pylist(),
        table.column("merchant_id").to_pylist(),
        table.column("is_fraud").to_pylist(),
        label_times_us(table, label_delay_us),
        strict=True,
    ):
        known = int(known_us)
        if fraud is None:
            continue
        before = since_us is not None and known < since_us
        if before or (until_us is not None and known >= until_us):
            continue
        label = {
            "transaction_id": tid,
            "merchant_id": merchant,
            "label_time": from_micros(known),
            "is_fraud": fraud,
        }
        out.append((merchant.encode(), _json.encode(label)))
    return out


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Send records (key, value) in order, idempotently, and wait until all are acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5, max_batch_size=262144
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in records]
        await producer.flush()
        for future in futures:
            await future
        return len(futures)
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topic: str,
    *,
    until: int | None = None,
    timeout: float = 60,
    distinct_keys: bool = False,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read a topic from the beginning (no group) until `until` records (or distinct keys:
    a redelivered transaction's score repeats its key) or `timeout` seconds. With `until`
    None, read every record the topic holds when the read starts (its end offsets then), and
    raise TimeoutError when that takes longer than `timeout`: a slow machine gives a late
    answer, never a short one."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,  # every partition, no offsets committed
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=1000,  # notice the topic soon when it does not exist yet
    )
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        partitions = await _partitions(consumer, topic, deadline) if until is None else []
        end = await consumer.end_offsets(partitions) if until is None else {}
        out: list[ConsumerRecord[bytes, bytes]] = []
        keys: set[bytes | None] = set()

        async def done() -> bool:
            if until is None:
                return all([await consumer.position(p) >= end[p] for p in partitions])
            return (len(keys) if distinct_keys else len(out)) >= until

        while not await done():
            if loop.time() >= deadline:
                if until is None:
                    raise TimeoutError(f"{topic}: {len(out)} records read in {timeout} s, not all")
                break
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
                if distinct_keys:
                    keys.update(r.key for r in records)
        return out
    finally:
        await consumer.stop()


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, deadline: float
) -> set[TopicPartition]:
    """The partitions of `topic` assigned to a consumer subscribed to it without a group: all
    of them, once its metadata names them (the topic may not exist yet)."""
    loop = asyncio.get_running_loop()
    while not (found := consumer.assignment()):
        if loop.time() >= deadline:
            raise TimeoutError(f"topic {topic} has no partitions")
        await asyncio.sleep(0.2)
    return set(found)


async def _committed(
    admin: AIOKafkaAdminClient, group: str, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """The offset group `group` would read each partition from (0: nothing committed)."""
    partitions = list(partitions)
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
    except GroupCoordinatorNotAvailableError:  # no group yet on a new broker
        offsets = {}
    # -1 (or absent): nothing committed, the group reads the partition from its start
    return {p: max(0, offsets[p].offset) if p in offsets else 0 for p in partitions}


async def committed_and_held(
    bootstrap: str, group: str, source: str, output: str
) -> tuple[int, int]:
    """How many records of `source` group `group` has committed, and how many `output` holds
    (each summed over partitions). Where each input record has one output record, written
    before the input is committed, the difference is what a dead worker wrote past its
    commits: the worker that takes its partitions over writes each of those again."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        partitions = {
            t["topic"]: [TopicPartition(t["topic"], p["partition"]) for p in t["partitions"]]
            for t in await admin.describe_topics([source, output])
        }
        committed = await _committed(admin, group, partitions[source])
        held = await consumer.end_offsets(partitions[output])
        return sum(committed.values()), sum(held.values())
    finally:
        await consumer.stop()
        await admin.close()


async def wait_for_group(bootstrap: str, group: str, topic: str, timeout: float = 60) -> None:
    """Wait until consumer group `group` has committed every record `topic` holds: its work
    on them is done, outputs included (workers commit after their outputs are acknowledged)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        partitions = await _partitions(consumer, topic, deadline)
        end = await consumer.end_offsets(partitions)
        while any(end.values()):  # an empty topic has nothing to commit
            committed = await _committed(admin, group, partitions)
            behind = {p.partition: end[p] - committed[p] for p in partitions}
            if not any(lag > 0 for lag in behind.values()):
                return
            if loop.time() >= deadline:
                raise TimeoutError(f"group {group} still behind on {topic}: {behind}")
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await admin.close()
