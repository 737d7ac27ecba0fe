"""The decision log in the warehouse: the online paths' records read from Kafka, the batch
path's written by Spark, one Arrow schema for both.

Reading the topic. A day's records are those whose transaction (event) time falls in the
day. A decision is made after its transaction, so no record of the day sits before the first
offset whose Kafka timestamp (the decision's produce time) is at the day's start: each
partition is read from there (`offsets_for_times`) to its end offset when the read began,
and the day's records kept. Re-running a day reads the same records and replaces the day
(idempotent); records a retry or a redelivery logged twice (same decision id, same path)
are kept once. With aiokafka (already the stream's client): Spark's Kafka source would bring
its jars and a JVM to a job that reads one day of one topic.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from aiokafka import AIOKafkaConsumer
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fraud_core.bundle import ModelBundle
from fraud_core.features import MODEL_INPUT_COLUMNS
from fraud_core.rollout import DecisionRecord, decode_decision

DECISION_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("transaction_id", pa.string()),
        ("card_id", pa.string()),
        ("path", pa.string()),
        ("role", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("feature_version", pa.string()),
        ("features", pa.list_(pa.float32())),
        ("score", pa.float32()),
        ("threshold", pa.float64()),
        ("decision", pa.string()),
        ("event_time_us", pa.int64()),
        ("decision_time_us", pa.int64()),
        ("degraded", pa.bool_()),
    ]
)
"""fraud_core.rollout.DecisionRecord as a table (the `decision_log` and `batch_decisions`
tables)."""


def decisions_table(records: list[DecisionRecord]) -> pa.Table:
    """Records as DECISION_SCHEMA rows (feature bytes as a list of float32)."""
    columns = {name: [getattr(r, name) for r in records] for name in DECISION_SCHEMA.names}
    vectors = np.frombuffer(b"".join(columns["features"]), dtype="<f4")
    width = len(records[0].features) // 4 if records else 0
    offsets = pa.array(np.arange(len(records) + 1, dtype=np.int32) * width)
    columns["features"] = pa.ListArray.from_arrays(offsets, pa.array(vectors, pa.float32()))
    return pa.table(columns, schema=DECISION_SCHEMA)


def day_bounds_us(day: dt.date) -> tuple[int, int]:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return int(start.timestamp() * 1_000_000), int(start.timestamp() * 1_000_000) + 86_400_000_000


def read_decision_day(
    bootstrap: str, topic: str, day: dt.date, timeout_s: float = 30.0
) -> pa.Table:
    """The decisions of transactions of `day` in the topic, each (decision id, path) once."""
    records = asyncio.run(_read(bootstrap, topic, day, timeout_s))
    lo, hi = day_bounds_us(day)
    kept: dict[tuple[str, str], DecisionRecord] = {}
    for record in records:
        if lo <= record.event_time_us < hi:
            kept.setdefault((record.decision_id, record.path), record)
    return decisions_table(list(kept.values()))


async def _read(bootstrap: str, topic: str, day: dt.date, timeout_s: float) -> list[DecisionRecord]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,  # no group: every partition is assigned, no offset committed
        auto_offset_reset="latest",
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return []
        async with asyncio.timeout(timeout_s):
            while not consumer.assignment():
                await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment())
        start_ms = day_bounds_us(day)[0] // 1000
        starts = await consumer.offsets_for_times(dict.fromkeys(tps, start_ms))
        ends = await consumer.end_offsets(tps)
        todo = {}
        for tp in tps:
            found = starts.get(tp)
            first = found.offset if found is not None else ends[tp]
            if first < ends[tp]:
                consumer.seek(tp, first)
                todo[tp] = ends[tp]
        for tp in tps:
            if tp not in todo:
                consumer.pause(tp)
        out: list[DecisionRecord] = []
        async with asyncio.timeout(timeout_s):
            while todo:
                fetched = await consumer.getmany(*todo, timeout_ms=500, max_records=10_000)
                for tp, messages in fetched.items():
                    for message in messages:
                        if message.offset < todo.get(tp, -1) and message.value is not None:
                            out.append(decode_decision(message.value))
                    if messages and messages[-1].offset + 1 >= todo.get(tp, 0):
                        todo.pop(tp, None)
        return out
    finally:
        await consumer.stop()


DECISION_COLUMNS = "decision_id string, features array<float>, score float, decision string"


def decision_column(bundle: ModelBundle, role: str) -> Column:
    """A struct column of DECISION_COLUMNS for `bundle` in `role`, from the model inputs and
    the transaction id (an iterator Arrow UDF, one ONNX Runtime session per task)."""
    onnx_bytes = bundle.onnx_bytes

    def decide(batches: Iterator[tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        from fraud_core.bundle import bundle_from_bytes
        from fraud_core.features import N_FEATURES, feature_matrix
        from fraud_core.inference import Scorer
        from fraud_core.rollout import decision_id

        scorer = Scorer(bundle_from_bytes(onnx_bytes))
        threshold = np.float32(scorer.threshold)
        version = scorer.version
        for ids, *arrays in batches:
            x = feature_matrix(dict(zip(MODEL_INPUT_COLUMNS, arrays, strict=True)), scorer.contract)
            scores = scorer.score(x)
            features = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), N_FEATURES)
            yield pa.StructArray.from_arrays(
                [
                    pa.array([decision_id(t, version, role) for t in ids.to_pylist()]),
                    features.cast(pa.list_(pa.float32())),
                    pa.array(scores, pa.float32()),
                    pa.array(np.where(scores >= threshold, "alert", "allow")),
                ],
                names=["decision_id", "features", "score", "decision"],
            )

    udf = F.arrow_udf(decide, DECISION_COLUMNS)  # type: ignore[call-overload]
    return udf("transaction_id", *MODEL_INPUT_COLUMNS)


def batch_decisions(features: DataFrame, bundles: dict[str, ModelBundle]) -> DataFrame:
    """The decision records of featurized rows, one per row and role (`bundles` by role),
    in DECISION_SCHEMA's columns plus `day`."""
    decided_at = F.lit(int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)).cast("long")
    base = features.withColumn("timestamp_us", F.unix_micros("timestamp"))
    frames = []
    for role, bundle in bundles.items():
        meta = bundle.metadata
        frames.append(
            base.select(
                "transaction_id", "card_id", "timestamp", "timestamp_us",
                decision_column(bundle, role).alias("d"),
            ).select(
                F.col("d.decision_id").alias("decision_id"), "transaction_id", "card_id",
                F.lit("batch").alias("path"), F.lit(role).alias("role"),
                F.lit(meta.name).alias("model_name"), F.lit(meta.version).alias("model_version"),
                F.lit(meta.feature_version).alias("feature_version"),
                F.col("d.features").alias("features"), F.col("d.score").alias("score"),
                F.lit(meta.threshold).cast("double").alias("threshold"),
                F.col("d.decision").alias("decision"),
                F.col("timestamp_us").alias("event_time_us"), decided_at.alias("decision_time_us"),
                F.lit(False).alias("degraded"),
                F.date_format("timestamp", "yyyy-MM-dd").alias("day"),
            )
        )  # fmt: skip
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out
