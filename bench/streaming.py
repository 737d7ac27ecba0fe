"""Stream scoring: a fraudscale Faust worker against a plain aiokafka loop, on one real broker.

Both sides do the same work per transaction (decode and validate, card state step, merchant
state lookup, features, one onnxruntime call per batch, produce the score keyed by
transaction_id) with the same fraud_core code and model; the plain loop keeps its state in a
dict and has no tables, changelogs, recovery or web server. It is the limit, not a rival.

1. Throughput: N transactions are in the topic before the consumer starts; transactions/s is
   N over the time from the first score to the last (scores' Kafka timestamps). The worker
   runs without the rollout and with it (every decision logged, a challenger scoring 10 % of
   transactions in shadow, a canary on 5 % of cards) in turns, `--rounds` times, each row
   showing its median, so the machine's drift does not land on one of them. Each turn then
   runs both at once, each on its own copy of the backlog, both on the measured core: the
   on / off ratio counts each one's scores while both were scoring (the paired ratio; the
   machine's speed moves 2x between minutes, which sequential turns cannot resolve).
2. Latency: transactions are produced at a fixed rate; latency is a score's Kafka timestamp
   minus its transaction's, p50 and p99 (the worker with the rollout on), leaving out the
   first `--warm-up` seconds of input, shown in a row of their own: a fresh worker scores its
   first seconds slowly, and a freshly started broker answers slower for its first 10-20 s
   (its JIT compiling); neither is a long-running deployment's steady state.
3. With `--workers 2 --partitions 8`: the group's aggregate throughput (the workers split the
   partitions before the backlog is produced), then the same with one worker SIGKILLed a
   third of the way through: the seconds until the survivor owns every partition (the
   session timeout, 10 s by default, bounds its detection) and until every transaction is
   scored.

The measured consumer (the worker, or the plain loop) runs alone on core 0; the broker (it
stands for a cluster on other machines) and this process's producers and readers on core 1
(`--no-pin`: anywhere).

    uv run python -m bench.streaming                          # 100k transactions, 1,000/s
    uv run python -m bench.streaming --rows 20000 --seconds 5 # a quick look
    uv run python -m bench.streaming --rows 100000 --workers 2 --partitions 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from rich.console import Console
from rich.table import Table

from bench import record_result
from bench.batch import make_model
from fraud_core.bundle import as_version
from fraud_core.inference import Scorer
from fraud_core.model_store import ModelStore, Served
from fraud_core.outbox import Outbox
from fraud_core.rollout import CANARY, CHALLENGER
from fraud_core.state import CardState
from fraud_data.landing import read_landing
from fraud_data.simulator import SimulationConfig, generate
from fraud_devtools.kafka import LocalKafka
from fraud_devtools.processes import pin_process, wait_until
from fraud_devtools.stream_workers import LocalWorker, consume, produce, transaction_records
from streaming.scoring import CardEntry, Record, entry_risk, score_transactions

console = Console()
# aiokafka logs an ERROR while a topic it produces to is still being created: noise here.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
_json = msgspec.json.Encoder()
MEASURED_CORE, SERVICES_CORE = "0", "1"


@dataclass(frozen=True)
class Run:
    name: str
    rows: int
    per_second: float
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")


def _throughput(scores: Sequence[ConsumerRecord[bytes, bytes]]) -> float:
    stamps = np.array([r.timestamp for r in scores], dtype=np.float64)
    span = (stamps.max() - stamps.min()) / 1000
    return len(scores) / span if span > 0 else float("inf")


def _overlap_ratio(
    first: Sequence[ConsumerRecord[bytes, bytes]], second: Sequence[ConsumerRecord[bytes, bytes]]
) -> tuple[float, float]:
    """`second`'s scores per second over `first`'s, counted while both were scoring (two
    workers loaded at once: the machine's drift lands on both alike), and that time in s."""
    a, b = (np.array([r.timestamp for r in s], dtype=np.int64) for s in (first, second))
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    inside = [int(((t >= lo) & (t <= hi)).sum()) for t in (a, b)]
    ratio = inside[1] / inside[0] if hi > lo and inside[0] else float("nan")
    return ratio, max(0, hi - lo) / 1000


def _latencies_ms(
    inputs: Sequence[ConsumerRecord[bytes, bytes]],
    scores: Sequence[ConsumerRecord[bytes, bytes]],
    warm_up: int = 0,
    until: int | None = None,
) -> tuple[float, float]:
    """p50 and p99 of score time minus input time, leaving out the first `warm_up` inputs
    (by time) and those from `until` on: a fresh consumer's first seconds are its start-up,
    not its steady state."""
    sent = {}
    for record in sorted(inputs, key=lambda r: r.timestamp)[warm_up:until]:
        sent[msgspec.json.decode(record.value)["transaction_id"]] = record.timestamp
    latency = np.array(
        [r.timestamp - sent[r.key.decode()] for r in scores if r.key and r.key.decode() in sent],
        dtype=np.float64,
    )
    return float(np.percentile(latency, 50)), float(np.percentile(latency, 99))


async def produce_at_rate(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]], rate: float
) -> None:
    """Send records at `rate` per second, in ticks of 10 ms."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, enable_idempotence=True)
    await producer.start()
    try:
        start = time.perf_counter()
        per_tick = max(1, int(rate / 100))
        for i in range(0, len(records), per_tick):
            for key, value in records[i : i + per_tick]:
                await producer.send(topic, value=value, key=key)
            wait = start + (i + per_tick) / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
        await producer.flush()
    finally:
        await producer.stop()


async def plain_loop(
    bootstrap: str, source: str, sink: str, scorer: Scorer, expected: int, batch_max: int
) -> None:
    """The baseline: consume, score with the same fraud_core code, produce; state in a dict."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"plain-{source}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    cards: dict[str, CardEntry] = {}
    done = 0
    try:
        while done < expected:
            batches = await consumer.getmany(timeout_ms=5, max_records=batch_max)
            for messages in batches.values():
                records = [Record.of(m) for m in messages]
                batch = score_transactions(
                    records,
                    Served(scorer),
                    lambda card: cards.setdefault(card, CardEntry(-1, CardState())),
                    lambda merchant, hour: entry_risk(None, hour),  # no labels, as the worker's
                )
                outbox = Outbox()
                for score in batch.scores:
                    outbox.add(sink, score.transaction_id.encode(), _json.encode(score))
                await outbox.flush(producer)
                done += len(records)
            if batches:
                await consumer.commit()
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()


def produce_later(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]], rate: float, delay: float
) -> None:
    """`produce_at_rate` after `delay` seconds (in a child process)."""
    time.sleep(delay)
    asyncio.run(produce_at_rate(bootstrap, topic, records, rate))


@contextlib.contextmanager
def on_cores(pinned: bool, cores: str = MEASURED_CORE) -> Iterator[None]:
    """This process (and the processes it starts meanwhile) on `cores`, then back on the
    services' core: the plain loop on the measured core, the group's workers on both."""
    if not pinned:
        yield
        return
    os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
    try:
        yield
    finally:
        os.sched_setaffinity(0, {int(SERVICES_CORE)})


def _scored(group: list[LocalWorker]) -> float:
    return sum(w.metric("fraudscale_stream_transactions_total") for w in group)


def _owned(group: list[LocalWorker]) -> list[float]:
    return [w.metric("fraudscale_stream_assigned_partitions") for w in group]


def _split(group: list[LocalWorker], partitions: int) -> bool:
    """Whether every worker of `group` owns some of the `partitions` and together all."""
    owned = _owned(group)
    return sum(owned) == partitions and min(owned) > 0


def group_pass(
    folder: Path, env: dict[str, str], bootstrap: str, records: list[tuple[bytes, bytes]],
    workers: int, partitions: int, *, kill: bool,
) -> tuple[list[ConsumerRecord[bytes, bytes]], float, float]:  # fmt: skip
    """`workers` workers split `partitions` partitions, then the backlog is produced; with
    `kill`, one is SIGKILLed a third of the way through. Returns the scores and, from the
    kill, the seconds until the rest own every partition and until every score is out."""
    prefix = f"group{int(time.time())}-{int(kill)}"
    group = [
        LocalWorker(folder, {
            **env, "FRAUD_STREAM_TOPIC_PREFIX": prefix, "FRAUD_STREAM_APP_ID": prefix,
            "FRAUD_STREAM_PARTITIONS": str(partitions),
        })
        for _ in range(workers)
    ]  # fmt: skip
    try:
        for worker in group:
            worker.start()
        wait_until(lambda: _split(group, partitions), "the group to split the partitions", 120)
        n = asyncio.run(produce(bootstrap, f"{prefix}.transactions", records))
        takeover = killed_at = float("nan")
        if kill:
            wait_until(lambda: _scored(group) >= n // 3, "a third of the backlog", 300)
            killed_at = time.monotonic()
            group[0].kill()
            wait_until(lambda: sum(_owned(group[1:])) == partitions, "the takeover", 300)
            takeover = time.monotonic() - killed_at
        scores = asyncio.run(
            consume(bootstrap, f"{prefix}.scores", until=n, timeout=600, distinct_keys=True)
        )
        return scores, takeover, time.monotonic() - killed_at
    finally:
        for worker in group:
            worker.kill()


def group_runs(
    folder: Path, env: dict[str, str], bootstrap: str, records: list[tuple[bytes, bytes]],
    workers: int, partitions: int,
) -> tuple[list[Run], tuple[float, float]]:  # fmt: skip
    """The group's aggregate throughput, then its recovery after a worker is killed."""
    scores, _, _ = group_pass(folder, env, bootstrap, records, workers, partitions, kill=False)
    name = f"{workers} workers, {partitions} partitions (the group)"
    runs = [Run(name, len({s.key for s in scores}), _throughput(scores))]
    _, takeover, done = group_pass(folder, env, bootstrap, records, workers, partitions, kill=True)
    return runs, (takeover, done)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="transactions for throughput")
    parser.add_argument("--rate", type=float, default=1000.0, help="input rate for latency")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    parser.add_argument(
        "--warm-up", type=float, default=10.0,
        help="seconds of input at the latency run's rate before the measured part",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("data/bench/streaming"))
    parser.add_argument("--workers", type=int, default=1, help="above 1: the group's rows too")
    parser.add_argument("--partitions", type=int, default=8, help="of the group's topics")
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="turns of the worker without and with the rollout (each row: the median)",
    )  # fmt: skip
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false",
        help="let every process run on any core (default: the measured one alone on core 0)",
    )  # fmt: skip
    args = parser.parse_args()
    work: Path = args.workdir
    shutil.rmtree(work / "run", ignore_errors=True)

    cards = max(1000, int(args.rows / 2.05))
    raw = work / f"raw-{args.rows}"
    if not raw.exists():
        generate(
            SimulationConfig(days=1, cards=cards, merchants=max(200, cards // 50), seed=8), raw
        )
    day = read_landing(raw).sort_by("timestamp")
    records = transaction_records(day)
    bundle = make_model(work)
    store = ModelStore(work / "run" / "models")
    store.publish(bundle)
    # The rollout row: the same champion, a canary on 5 % of cards and a challenger scoring
    # 10 % of transactions in shadow (the champion's model under other versions: same cost).
    rollout = ModelStore(work / "run" / "models-rollout")
    rollout.publish(bundle)
    for version, role in (("canary", CANARY), ("shadow", CHALLENGER)):
        rollout.add(as_version(bundle, version))
        rollout.point_to(version, role, share=0.05 if role == CANARY else 0.0)
    scorer = Scorer(bundle)
    # Latency: `--warm-up` seconds of input first (left out of the percentiles), then
    # `--seconds` measured.
    warm_up = int(args.rate * args.warm_up)
    latency_records = records[: warm_up + int(args.rate * args.seconds)]
    if len(latency_records) <= warm_up:
        sys.exit(
            f"--rows {args.rows} gives {len(records):,} transactions: the latency run needs more "
            f"than --warm-up x --rate ({warm_up:,}); raise --rows or lower --warm-up"
        )

    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if external else LocalKafka(work / "run" / "kafka")
    if broker is not None:
        broker.start()
    # The measured consumer (the worker, or the plain loop) alone on one core; the broker (a
    # cluster elsewhere) and this process's producers and readers on the other.
    pinned = args.pin and (os.cpu_count() or 1) >= 2
    worker_cpus = MEASURED_CORE if pinned else None
    if pinned:
        if broker is not None and broker.process is not None:
            pin_process(broker.process.pid, SERVICES_CORE)
        os.sched_setaffinity(0, {int(SERVICES_CORE)})
    bootstrap = external or (broker.bootstrap if broker else "")
    runs: list[Run] = []
    try:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "FRAUD_STREAM_MODEL_STORE_DIR": str(store.root),
            "FRAUD_STREAM_LOG_LEVEL": "warn",
            "FRAUD_STREAM_DECISION_LOG": "false",
        }
        with_rollout = {
            **env,
            "FRAUD_STREAM_MODEL_STORE_DIR": str(rollout.root),
            "FRAUD_STREAM_DECISION_LOG": "true",
            "FRAUD_STREAM_SHADOW_SAMPLE": "0.1",
        }

        def worker_on(prefix: str, settings: dict[str, str]) -> LocalWorker:
            """A worker (not started) of its own group, on the topics under `prefix`."""
            own = {**settings, "FRAUD_STREAM_TOPIC_PREFIX": prefix, "FRAUD_STREAM_APP_ID": prefix}
            return LocalWorker(work / "run", own, cpus=worker_cpus)

        # Throughput: the backlog is in the topic before the worker starts. The worker runs
        # without and with the rollout in turns, `--rounds` times; each row is the median.
        first = f"bench{int(time.time())}"
        passes: dict[str, list[Run]] = {}
        paired: list[float] = []
        n = len(records)
        for turn in range(args.rounds):
            for name, settings in (
                ("fraudscale Faust worker", env),
                ("  + decision log, 10 % shadow, 5 % canary", with_rollout),
            ):
                prefix = f"{first}-{turn}{int(settings is with_rollout)}"
                n = asyncio.run(produce(bootstrap, f"{prefix}.transactions", records))
                worker = worker_on(prefix, settings)
                worker.start()
                scores = asyncio.run(consume(bootstrap, f"{prefix}.scores", until=n, timeout=600))
                worker.stop()
                run = Run(name, len(scores), _throughput(scores))
                console.print(f"  round {turn + 1}: {name.strip()}: {run.per_second:,.0f}/s")
                passes.setdefault(name, []).append(run)
            # Then both at once on the measured core, each on its own copy of the backlog.
            prefixes = [f"{first}-{turn}p{i}" for i in range(2)]
            pair = []
            for prefix, settings in zip(prefixes, (env, with_rollout), strict=True):
                asyncio.run(produce(bootstrap, f"{prefix}.transactions", records))
                pair.append(worker_on(prefix, settings))
            with ThreadPoolExecutor(2) as starting:  # both start (and score) at once
                list(starting.map(LocalWorker.start, pair))
            off, on = (
                asyncio.run(consume(bootstrap, f"{prefix}.scores", until=n, timeout=600))
                for prefix in prefixes
            )
            for worker in pair:
                worker.stop()
            ratio, seconds = _overlap_ratio(off, on)
            paired.append(ratio)
            console.print(
                f"  round {turn + 1}: both at once, on / off: {ratio:.2f} ({seconds:.1f} s)"
            )
        for name, turns in passes.items():
            runs.append(Run(name, turns[0].rows, statistics.median(r.per_second for r in turns)))

        prefix = f"{first}-00"
        with on_cores(pinned):
            asyncio.run(
                plain_loop(bootstrap, f"{prefix}.transactions", f"{prefix}.plain", scorer, n, 500)
            )
        plain = asyncio.run(consume(bootstrap, f"{prefix}.plain", until=n, timeout=600))
        runs.append(Run("plain aiokafka loop (the limit)", len(plain), _throughput(plain)))

        # Latency at a fixed rate, rollout on: the worker is up and idle before input starts.
        prefix = f"lat{int(time.time())}"
        worker = worker_on(prefix, with_rollout)
        worker.start()
        time.sleep(3)  # let the group settle
        asyncio.run(
            produce_at_rate(bootstrap, f"{prefix}.transactions", latency_records, args.rate)
        )
        scores = asyncio.run(
            consume(bootstrap, f"{prefix}.scores", until=len(latency_records), timeout=120)
        )
        worker.stop()
        inputs = asyncio.run(
            consume(bootstrap, f"{prefix}.transactions", until=len(latency_records))
        )
        p50, p99 = _latencies_ms(inputs, scores, warm_up)
        worker_p99 = p99
        runs.append(
            Run(f"fraudscale Faust worker + rollout @ {args.rate:,.0f}/s", len(scores), 0, p50, p99)
        )
        if warm_up:
            p50, p99 = _latencies_ms(inputs, scores, 0, warm_up)
            label = f"  its first {args.warm_up:g} s (left out above)"
            runs.append(Run(label, warm_up, 0, p50, p99))

        # The plain loop in this process, its input from another (on the services' core).
        sender = multiprocessing.get_context("spawn").Process(
            target=produce_later,
            args=(bootstrap, f"{prefix}.transactions2", latency_records, args.rate, 3.0),
        )
        sender.start()
        assert sender.pid is not None
        if pinned:
            pin_process(sender.pid, SERVICES_CORE)
        with on_cores(pinned):
            asyncio.run(
                plain_loop(
                    bootstrap, f"{prefix}.transactions2", f"{prefix}.plain", scorer,
                    len(latency_records), 500,
                )
            )  # fmt: skip
        sender.join()
        plain = asyncio.run(consume(bootstrap, f"{prefix}.plain", until=len(latency_records)))
        inputs = asyncio.run(
            consume(bootstrap, f"{prefix}.transactions2", until=len(latency_records))
        )
        p50, p99 = _latencies_ms(inputs, plain, warm_up)
        runs.append(Run(f"plain aiokafka loop @ {args.rate:,.0f}/s", len(plain), 0, p50, p99))
        if args.workers > 1:
            with on_cores(pinned, f"{MEASURED_CORE},{SERVICES_CORE}"):
                group, recovery = group_runs(
                    work / "run", env, bootstrap, records, args.workers, args.partitions
                )
            runs += group
    finally:
        if broker is not None:
            broker.stop()

    table = Table(title=f"streaming: {n:,} transactions, 1 worker process, real Kafka broker")
    for column in ("pipeline", "scored", "transactions/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for run in runs:
        table.add_row(
            run.name, f"{run.rows:,}",
            f"{run.per_second:,.0f}" if run.per_second else "",
            "" if np.isnan(run.p50_ms) else f"{run.p50_ms:.1f}",
            "" if np.isnan(run.p99_ms) else f"{run.p99_ms:.1f}",
        )  # fmt: skip
    console.print(table)
    ratio = runs[0].per_second / runs[2].per_second
    rollout_ratio = runs[1].per_second / runs[0].per_second
    console.print(f"Faust worker throughput / plain loop: {ratio:.2f}")
    console.print(f"with the decision log, shadow and canary / without: {rollout_ratio:.2f}")
    paired_ratio = statistics.median(paired)
    console.print(
        "the same, both workers loaded at once (median turn; per turn "
        f"{', '.join(f'{r:.2f}' for r in paired)}): {paired_ratio:.2f}"
    )
    extra = {}
    if args.workers > 1:
        takeover, done = recovery
        console.print(
            f"{args.workers} workers / 1 worker: {runs[-1].per_second / runs[0].per_second:.2f}; "
            f"a worker killed: the survivors own every partition {takeover:.1f} s later, "
            f"the backlog is scored {done:.1f} s after the kill"
        )
        extra = {"takeover_seconds": takeover, "scored_after_kill_seconds": done}
    record_result(
        "streaming",
        {
            "runs": [r.__dict__ for r in runs],
            "throughput_ratio": ratio,
            "rollout_ratio": rollout_ratio,
            "rollout_ratio_paired": paired_ratio,
            "worker_p99_ms": worker_p99,
            **extra,
        },
    )


if __name__ == "__main__":
    main()
