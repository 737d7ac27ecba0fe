"""End-of-day card and merchant states computed by Spark and written to the online store from
the executors: what `fraud_core.state.end_states` leaves after replaying the same history
(the test holds them equal), without replaying it in one Python process or collecting it to
the driver (at 10M transactions a day the replay cannot finish in a night).

A card's state is its transactions within CARD_RETENTION_US of its latest one, in time order
(ties by transaction id); a merchant's, its labels counted per hour in which they became known,
within MERCHANT_RETENTION_US of its latest such hour. Spark keeps those rows with a window
per key and gathers them per key; an Arrow UDF per partition encodes each state as
MessagePack (`fraud_core.state.encode_state`, the stream's and REST's encoding) and SETs it
with its time to live, one pipelined round trip per 10,000 keys. A retried task writes the
same keys and values again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

import pyarrow as pa
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from fraud_assets.lib.spark_features import hourly_labels
from fraud_core.features import CARD_RETENTION_US, HOUR_US, MERCHANT_RETENTION_US
from fraud_core.online_store import (
    CARD_STATE_TTL_MS,
    MERCHANT_STATE_TTL_MS,
    card_key,
    merchant_key,
    write_encoded,
)
from fraud_core.state import CardState, MerchantState, encode_state

WRITTEN_SCHEMA = "kind string, written long"


def _latest_only(frame: DataFrame, key: str, order: str, keep: int) -> DataFrame:
    """`frame`'s rows whose `order` is at most `keep` before the latest of their `key`."""
    latest = F.max(order).over(Window.partitionBy(key))
    return (
        frame.withColumn("_latest", latest)
        .where(F.col(order) >= F.col("_latest") - keep)
        .drop("_latest")
    )


def card_events(history: DataFrame) -> DataFrame:
    """(card_id, events): each card's retained transactions, sorted by (ts_us, transaction_id)."""
    kept = _latest_only(history, "card_id", "ts_us", CARD_RETENTION_US)
    event = F.struct("ts_us", "transaction_id", "amount", "merchant_id", "country")
    return kept.groupBy("card_id").agg(F.sort_array(F.collect_list(event)).alias("events"))


def merchant_hours(history: DataFrame, label_delay_us: int) -> DataFrame:
    """(merchant_id, hours): each merchant's retained hourly label counts, sorted by hour."""
    kept = _latest_only(
        hourly_labels(history, label_delay_us), "merchant_id", "hour",
        MERCHANT_RETENTION_US // HOUR_US,
    )  # fmt: skip
    counts = F.struct("hour", "labelled", "fraud")
    return kept.groupBy("merchant_id").agg(F.sort_array(F.collect_list(counts)).alias("hours"))


def _card_entry(card_id: str, events: list[dict[str, Any]]) -> tuple[str, bytes, int]:
    state = CardState(
        ts=[e["ts_us"] for e in events],
        amount=[e["amount"] for e in events],
        merchant=[e["merchant_id"] for e in events],
        country=[e["country"] for e in events],
    )
    return card_key(card_id), encode_state(state), CARD_STATE_TTL_MS


def _merchant_entry(merchant_id: str, hours: list[dict[str, Any]]) -> tuple[str, bytes, int]:
    state = MerchantState(
        hours=[h["hour"] for h in hours],
        labelled=[h["labelled"] for h in hours],
        fraud=[h["fraud"] for h in hours],
    )
    return merchant_key(merchant_id), encode_state(state), MERCHANT_STATE_TTL_MS


Entry: TypeAlias = Callable[[str, list[dict[str, Any]]], tuple[str, bytes, int]]


def _write(
    kind: str, entry: Entry, redis_url: str, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """An Arrow UDF: encode and write each (key, rows) of a partition; one row of
    (kind, how many written)."""

    def encoded() -> Iterator[tuple[str, bytes, int]]:
        for batch in batches:
            keys, rows = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            for key, values in zip(keys, rows, strict=True):
                yield entry(key, values)

    yield pa.record_batch({"kind": [kind], "written": [write_encoded(redis_url, encoded())]})


def write_end_states(history: DataFrame, label_delay_us: int, redis_url: str) -> tuple[int, int]:
    """Write every card's and merchant's state after `history` (raw transactions with ts_us) to
    the online store at `redis_url`; returns how many cards and merchants were written."""
    cards = card_events(history).mapInArrow(
        functools.partial(_write, "card", _card_entry, redis_url), WRITTEN_SCHEMA
    )
    merchants = merchant_hours(history, label_delay_us).mapInArrow(
        functools.partial(_write, "merchant", _merchant_entry, redis_url), WRITTEN_SCHEMA
    )
    written = cards.unionByName(merchants).groupBy("kind").agg(F.sum("written").alias("n"))
    totals = {row["kind"]: row["n"] for row in written.collect()}
    return totals.get("card", 0), totals.get("merchant", 0)
