"""Start stream workers warm: card and merchant states from history, written into the tables'
changelog topics (and the online store), without scoring anything.

    python -m streaming.warm DATA [--until 2026-01-25T00:00:00+00:00] [--replace]

DATA is a folder of (day folders of) labelled transactions: the landing folder, or the
warehouse's raw_transactions. Rows that break the schema are left out, as the batch path
quarantines them. The states hold the transactions before `--until` (default: the end of the
newest day in DATA) and the labels known before it: a row's label is known the published
champion's label delay after it (its bundle's data contract), so the states are the ones its
training features saw. The labels topic must carry the labels known from then on.

Workers that start afterwards restore their tables from these changelogs, so the first live
transaction gets the features the batch path gives it. Entries carry offset -1: every live
record is new to them. Tables that already hold state are left alone unless `--replace` is
given (a warm start overwrites whatever the workers learnt live).

Progress is printed per partition: how many cards and merchants, how far their transactions
and labels go. Running workers report the same per partition as they apply live records
(`fraudscale_stream_applied_until_seconds`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from fraud_core.bundle import BundleError
from fraud_core.features import DAY_US, HOUR_US
from fraud_core.model_store import ModelStore
from fraud_core.online_store import write_states
from fraud_core.outbox import Outbox, key_partition
from fraud_core.schema import from_micros, split_valid, timestamps_us, to_micros
from fraud_core.state import CardState, MerchantState, end_states
from fraud_data.landing import read_landing
from streaming.scoring import CardEntry, MerchantEntry, encode_entry
from streaming.settings import CARD_TABLE, MERCHANT_TABLE, StreamSettings
from streaming.topics import provision_topics


@dataclass
class PartitionProgress:
    """What a warm start put into one partition of the tables."""

    cards: int = 0
    transactions: int = 0
    newest_transaction_us: int = 0
    merchants: int = 0
    labels: int = 0
    newest_label_us: int = 0


@dataclass
class WarmStart:
    until_us: int
    rows: int
    left_out: int
    partitions: dict[int, PartitionProgress] = field(default_factory=dict)

    @property
    def cards(self) -> int:
        return sum(p.cards for p in self.partitions.values())

    @property
    def merchants(self) -> int:
        return sum(p.merchants for p in self.partitions.values())


class TablesNotEmptyError(RuntimeError):
    """The tables already hold state; a warm start would overwrite it."""


def history_until(data: str | Path, until_us: int | None) -> tuple[pa.Table, int, int]:
    """Valid labelled rows of `data` in time order, the cut (default: the end of the newest
    day) and how many rows were left out as invalid."""
    valid, rejected = split_valid(read_landing(data))
    table = valid.sort_by("timestamp")
    if until_us is None:
        newest = int(timestamps_us(table.column("timestamp")).max())
        until_us = (newest // DAY_US + 1) * DAY_US
    return table, until_us, rejected.num_rows


def progress(
    cards: Mapping[str, CardState], merchants: Mapping[str, MerchantState], partitions: int
) -> dict[int, PartitionProgress]:
    """Per partition of the tables, what the states hold."""
    out: dict[int, PartitionProgress] = defaultdict(PartitionProgress)
    for card_id, card in cards.items():
        p = out[key_partition(card_id.encode(), partitions)]
        p.cards += 1
        p.transactions += len(card.ts)
        p.newest_transaction_us = max(p.newest_transaction_us, card.ts[-1] if card.ts else 0)
    for merchant_id, merchant in merchants.items():
        p = out[key_partition(merchant_id.encode(), partitions)]
        p.merchants += 1
        p.labels += sum(merchant.labelled)
        newest = (merchant.hours[-1] + 1) * HOUR_US - 1 if merchant.hours else 0
        p.newest_label_us = max(p.newest_label_us, newest)
    return dict(sorted(out.items()))


async def _ensure_changelogs(settings: StreamSettings, replace: bool) -> list[str]:
    """Create the tables' changelog topics as Faust would (compacted, the app's partition
    count); TablesNotEmptyError if they hold records and `replace` is off."""
    topics = [settings.changelog(CARD_TABLE), settings.changelog(MERCHANT_TABLE)]
    config = {"cleanup.policy": "compact", **settings.topic_config()}
    shown = await provision_topics(
        settings.broker, topics, settings.partitions, settings.replication_factor, config
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker)
    await consumer.start()
    try:
        for topic, partitions in shown.items():
            if len(partitions) != settings.partitions:
                raise RuntimeError(
                    f"{topic} has {len(partitions)} partitions; the app uses {settings.partitions}"
                )
            ends = await consumer.end_offsets(partitions)
            held = sum(ends.values())
            if held and not replace:
                raise TablesNotEmptyError(
                    f"{topic} already holds {held:,} records (workers ran, or a warm start did): "
                    "pass --replace to overwrite the tables with states from history"
                )
    finally:
        await consumer.stop()
    return topics


async def write_tables(
    settings: StreamSettings,
    cards: Mapping[str, CardState],
    merchants: Mapping[str, MerchantState],
    *,
    replace: bool = False,
) -> None:
    """Write the states as table entries (offset -1) into the changelogs, each in the
    partition of its key, and wait until the broker has them all."""
    card_topic, merchant_topic = await _ensure_changelogs(settings, replace)
    outbox = Outbox()
    for card_id, card in cards.items():
        key = card_id.encode()
        partition = key_partition(key, settings.partitions)
        outbox.add(card_topic, key, encode_entry(CardEntry(-1, card)), partition=partition)
    for merchant_id, merchant in merchants.items():
        key = merchant_id.encode()
        partition = key_partition(key, settings.partitions)
        outbox.add(
            merchant_topic, key, encode_entry(MerchantEntry(-1, merchant)), partition=partition
        )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        await asyncio.gather(*await outbox.flush(producer))
    finally:
        await producer.stop()


def write_online_store(
    redis_url: str, cards: Mapping[str, CardState], merchants: Mapping[str, MerchantState]
) -> None:
    """The same states into the REST service's online store."""
    write_states(redis_url, cards, merchants)


class NoChampionError(RuntimeError):
    """No valid model is published, so the label delay is unknown."""


def champion_label_delay(settings: StreamSettings) -> int:
    """The label delay of the published champion (what the workers will score with)."""
    try:
        bundle = ModelStore(settings.model_store_dir).load_champion()
    except BundleError as exc:
        raise NoChampionError(
            f"the warm start takes the label delay from the published model: {exc}"
        ) from None
    return bundle.metadata.contract.label_delay_us


def warm_start(
    settings: StreamSettings, data: str | Path, until_us: int | None = None, replace: bool = False
) -> WarmStart:
    """Replay `data` before `until_us` with the reference implementation (labels known the
    champion's label delay after their transactions) and write the end states to the tables
    (and to Redis when `settings.redis_url` is set)."""
    delay = champion_label_delay(settings)
    table, until_us, left_out = history_until(data, until_us)
    cards, merchants = end_states(table, until_us, label_delay_us=delay)
    asyncio.run(write_tables(settings, cards, merchants, replace=replace))
    if settings.redis_url:
        write_online_store(settings.redis_url, cards, merchants)
    before = pc.less(table.column("timestamp"), pa.scalar(from_micros(until_us)))
    rows = int(pc.sum(before.cast(pa.int64())).as_py() or 0)
    return WarmStart(until_us, rows, left_out, progress(cards, merchants, settings.partitions))


def _time(us: int) -> str:
    return from_micros(us).strftime("%Y-%m-%d %H:%M") if us else "-"


def report(result: WarmStart) -> Table:
    table = Table(title=f"warm start: state before {_time(result.until_us)}, per partition")
    columns = ("part.", "cards", "txns held", "newest txn", "merchants", "labels",
               "labels until")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for partition, p in result.partitions.items():
        table.add_row(
            str(partition), f"{p.cards:,}", f"{p.transactions:,}",
            _time(p.newest_transaction_us), f"{p.merchants:,}", f"{p.labels:,}",
            _time(p.newest_label_us),
        )  # fmt: skip
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streaming.warm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", type=Path, help="folder of labelled transactions")
    parser.add_argument(
        "--until", type=dt.datetime.fromisoformat, default=None,
        help="ISO time with zone: state before it (default: end of the newest day)",
    )  # fmt: skip
    parser.add_argument("--replace", action="store_true", help="overwrite tables holding state")
    args = parser.parse_args(argv)
    console = Console()
    settings = StreamSettings.from_env()
    until = None
    if args.until is not None:
        if args.until.tzinfo is None:
            parser.error("--until needs a time zone, e.g. 2026-01-25T00:00:00+00:00")
        until = to_micros(args.until)
    try:
        result = warm_start(settings, args.data, until, replace=args.replace)
    except (TablesNotEmptyError, NoChampionError) as exc:
        console.print(f"[red]not warmed:[/red] {exc}")
        return 1
    console.print(
        f"{result.rows:,} transactions before {_time(result.until_us)} replayed "
        f"({result.left_out:,} invalid rows left out): {result.cards:,} cards and "
        f"{result.merchants:,} merchants written to {settings.changelog(CARD_TABLE)} and "
        f"{settings.changelog(MERCHANT_TABLE)}"
        + (" and the online store" if settings.redis_url else "")
    )
    console.print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
