"""Batch scoring: the Spark path of the asset graph against a single-process DuckDB pipeline.

Both sides read the same raw day folders (a target day plus its card look-back), compute the
same 17 stateful features (both from fraud_core's window specs: Spark window functions on
one side, DuckDB SQL window functions on the other), build the model input with fraud_core's
`feature_matrix`, score with the same ONNX bundle, and write Parquet partitioned by hour.
The Spark side is the assets' own code (`featurize_days` + `score_days`), run twice: in a
fresh local session (a nightly Dagster run with the default local[*] master), and through a
long-lived Spark Connect server (FRAUD_ASSETS_SPARK_REMOTE), one run per night; the table
shows a later night, when the server has run the job before. Both Spark paths run on the
JDK that --java-home names (default auto, the newest installed; a JDK 25 starts from its AOT
cache, recorded first on separate small data when missing).

    uv run python -m bench.batch --rows 10000000        # the issue's size
    uv run python -m bench.batch --rows 1000000         # a quick look
    uv run python -m bench.batch --rows 1000000 --cluster-workers 2   # + a standalone cluster

Each row reports its peak memory: the resident memory of this process and every process it
started (a local Spark JVM; a cluster's master, workers and executors), sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from rich.console import Console
from rich.table import Table

from bench import record_result
from fraud_assets.settings import AssetSettings
from fraud_core.bundle import ModelBundle
from fraud_core.features import (
    CARD_WINDOWS,
    DEFAULT_LABEL_DELAY_US,
    FEATURE_NAMES,
    HOUR_US,
    MERCHANT_WINDOWS,
    STATEFUL_FEATURES,
    arrow_columns,
    feature_matrix,
)
from fraud_core.inference import Scorer
from fraud_core.schema import timestamps_us
from fraud_data.simulator import SimulationConfig, generate

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from fraud_assets.lib.jvm import Jdk
    from fraud_training.lightgbm_trainer import TrainedModel

console = Console()


@dataclass(frozen=True)
class Timing:
    name: str
    seconds: float
    rows: int
    peak_mb: float = float("nan")
    """The most resident memory this process and every process it started held together."""


PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid = int(stat.parent.name)
        parents[pid], rss[pid] = int(fields[1]), int(fields[21]) * PAGE
    total, todo = 0, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


class PeakMemory:
    """Samples `tree_rss_bytes` of this process every 0.5 s in a thread; `mb` is the peak:
    the driver, a local Spark JVM, or a cluster's master, workers and executors started from
    here, all counted."""

    def __init__(self) -> None:
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.mb = max(self.mb, tree_rss_bytes(os.getpid()) / 2**20)
            if self._stop.wait(0.5):
                return


def make_model(workdir: Path) -> ModelBundle:
    """A LightGBM-100 bundle trained on separate simulated history (reference features)."""
    return train_model(workdir).bundle


def train_model(workdir: Path) -> TrainedModel:
    """LightGBM-100 on 12 simulated days in `workdir`/train_landing (bundle + native booster)."""
    from fraud_core.state import replay
    from fraud_data.landing import read_landing
    from fraud_training.encoding import learn_contract
    from fraud_training.lightgbm_trainer import LightGBMParams, train_bundle

    config = SimulationConfig(days=12, cards=6000, merchants=600, seed=99, fraud_intensity=3.0)
    generate(config, workdir / "train_landing")
    history = read_landing(workdir / "train_landing").sort_by("timestamp")
    ts = timestamps_us(history.column("timestamp"))
    day = (ts - ts.min()) // (24 * HOUR_US)
    train, valid = (day >= 2) & (day < 9), day >= 9
    contract = learn_contract(history.filter(pa.array(train)), DEFAULT_LABEL_DELAY_US)
    x = feature_matrix({**arrow_columns(history), **replay(history)}, contract)
    y = np.asarray(history.column("is_fraud"))
    return train_bundle(
        x[train], y[train], x[valid], y[valid], contract=contract,
        params=LightGBMParams(n_estimators=100),
    )  # fmt: skip


def _card_sql(spec_name: str, aggregate: str, window: str, default: float) -> str:
    count = f"count(*) OVER {window}"
    total = f"sum(amount) OVER {window}"
    value = {
        "count": f"{count}::DOUBLE",
        "amount_sum": total,
        "amount_mean": f"{total} / {count}",
        "seconds_since_prev": f"(ts_us - max(ts_us) OVER {window}) / 1e6",
        "amount_to_mean": f"CASE WHEN {total} > 0 THEN amount * {count} / {total} END",
        "distinct_merchants": f"count(DISTINCT merchant_id) OVER {window}::DOUBLE",
        "new_country": (
            f"CASE WHEN list_contains(list(country) OVER {window}, country) THEN 0.0 ELSE 1.0 END"
        ),
    }[aggregate]
    return (
        f"CASE WHEN {count} > 0 THEN coalesce({value}, {default}) ELSE {default} END AS {spec_name}"
    )


def duckdb_features(raw_files: list[str], start_us: int, end_us: int) -> pa.Table:
    """The 17 stateful features in DuckDB SQL, derived from the same WindowSpecs."""
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count() or 1}")
    windows = sorted({s.window_us for s in CARD_WINDOWS})
    window_sql = ", ".join(
        f"w{w} AS (PARTITION BY card_id ORDER BY ts_us RANGE BETWEEN {w} PRECEDING AND 1 PRECEDING)"
        for w in windows
    )
    card_columns = ",\n".join(
        _card_sql(s.name, s.aggregate, f"w{s.window_us}", s.default) for s in CARD_WINDOWS
    )
    merchant_columns = []
    for s in MERCHANT_WINDOWS:
        frame = (
            "(PARTITION BY merchant_id ORDER BY hour "
            f"RANGE BETWEEN {s.window_hours} PRECEDING AND 1 PRECEDING)"
        )
        labelled = f"coalesce(sum(labelled) OVER {frame}, 0)"
        fraud = f"coalesce(sum(fraud) OVER {frame}, 0)"
        value = (
            f"{labelled}::DOUBLE"
            if s.aggregate == "label_count"
            else f"CASE WHEN {labelled} > 0 THEN {fraud} / {labelled} ELSE {s.default} END"
        )
        merchant_columns.append(f"{value} AS {s.name}")
    files = ", ".join(f"'{f}'" for f in raw_files)
    sql = f"""
    WITH hist AS (
        SELECT transaction_id, card_id, merchant_id, merchant_category, amount, currency, country,
               channel, timestamp, is_fraud, epoch_us(timestamp) AS ts_us
        FROM read_parquet([{files}])
    ),
    cards AS (
        SELECT *, {card_columns}
        FROM hist WINDOW {window_sql}
    ),
    targets AS (SELECT * FROM cards WHERE ts_us >= {start_us} AND ts_us < {end_us}),
    labels AS (
        SELECT merchant_id, (ts_us + {DEFAULT_LABEL_DELAY_US}) // {HOUR_US} AS hour,
               count(*) AS labelled, sum(is_fraud::INT) AS fraud, false AS is_query
        FROM hist WHERE is_fraud IS NOT NULL GROUP BY ALL
    ),
    queries AS (
        SELECT DISTINCT merchant_id, ts_us // {HOUR_US} AS hour, 0 AS labelled, 0 AS fraud,
               true AS is_query
        FROM targets
    ),
    risk AS (
        SELECT merchant_id, hour, is_query, {", ".join(merchant_columns)}
        FROM (SELECT * FROM labels UNION ALL SELECT * FROM queries)
    )
    SELECT t.*, {", ".join(f"r.{s.name}" for s in MERCHANT_WINDOWS)}
    FROM targets t JOIN risk r
      ON r.is_query AND r.merchant_id = t.merchant_id AND r.hour = t.ts_us // {HOUR_US}
    """
    return con.sql(sql).to_arrow_table()


def run_duckdb(
    raw_files: list[str], start_us: int, end_us: int, bundle: ModelBundle, out: Path
) -> int:
    features = duckdb_features(raw_files, start_us, end_us)
    scorer = Scorer(bundle)
    parts = []
    for batch in features.to_batches(max_chunksize=65_536):
        chunk = pa.Table.from_batches([batch])
        x = feature_matrix(arrow_columns(chunk), scorer.contract)
        scores = scorer.score(x)
        parts.append(
            pa.table(
                {
                    "transaction_id": chunk.column("transaction_id"),
                    "score": pa.array(scores),
                    "is_alert": pa.array(scores >= np.float32(scorer.threshold)),
                    "hour": pc.hour(chunk.column("timestamp")),
                }
            )
        )
    scored = pa.concat_tables(parts)
    ds.write_dataset(
        scored, out, format="parquet", partitioning=["hour"], partitioning_flavor="hive",
        existing_data_behavior="delete_matching",
    )  # fmt: skip
    return scored.num_rows


def prepare_jdk(setting: str) -> tuple[Jdk | None, Path | None]:
    """Point both Spark runs at the JDK `setting` names, with its AOT cache when it has one."""
    from fraud_assets.lib.spark_aot import record
    from fraud_assets.lib.spark_session import prepare_local_driver, spark_aot_cache

    os.environ["FRAUD_ASSETS_JAVA_HOME"] = setting
    settings = AssetSettings.from_env()
    jdk = prepare_local_driver(settings)
    aot = spark_aot_cache(settings, jdk)
    if jdk is not None and aot is not None and not aot.exists():
        console.print(f"recording the AOT cache for Java {jdk.version} (separate small data)")
        console.print(f"recorded {aot} in {record(jdk, aot):.0f} s")
    where = f"Java {jdk.version} ({jdk.home})" if jdk else "Java from PATH"
    console.print(f"Spark driver: {where}, AOT cache: {aot or 'none'}")
    return jdk, aot


def run_spark(
    raw: Path, day: dt.date, bundle: ModelBundle, work: Path, master: str, event_log: Path | None
) -> tuple[int, float]:
    from pyspark.sql import SparkSession

    from fraud_assets.lib.spark_session import local_config

    start = time.perf_counter()
    config = local_config(AssetSettings.from_env(), master)
    if event_log is not None:  # for bench.spark_stages
        event_log.mkdir(parents=True, exist_ok=True)
        config |= {
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": str(event_log.resolve()),
            "spark.eventLog.compress": "false",
            "spark.eventLog.rolling.enabled": "false",
        }
    session = SparkSession.builder.config(map=config).getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    startup = time.perf_counter() - start
    rows = featurize_and_score(session, raw, day, bundle, work, "Spark")
    session.stop()
    console.print(f"Spark session start-up {startup:.1f} s")
    return rows, startup


def run_cluster(
    raw: Path, day: dt.date, bundle: ModelBundle, work: Path, workers: int, java: str
) -> Timing:
    """The same steps on a standalone cluster on loopback (`make spark-cluster`'s): a master
    and `workers` 1-core workers, started before the clock and stopped after."""
    from fraud_devtools.spark_cluster import LocalSparkCluster

    cluster = LocalSparkCluster(work / "cluster", workers=workers)
    cluster.start()
    try:
        t0 = time.perf_counter()
        with PeakMemory() as peak:
            rows, _ = run_spark(
                raw, day, bundle, work / "out" / "cluster", cluster.master_url, None
            )
        name = f"fraudscale Spark standalone, {workers} workers x 1 core, {java}"
        return Timing(name, time.perf_counter() - t0, rows, peak.mb)
    finally:
        cluster.stop()


def featurize_and_score(
    session: SparkSession, raw: Path, day: dt.date, bundle: ModelBundle, work: Path, name: str
) -> int:
    """The scored_transactions asset's Spark steps for one day: featurize, then score."""
    from fraud_assets.lib.batch import featurize_days, score_days
    from fraud_assets.lib.warehouse import day_rows

    shutil.rmtree(work, ignore_errors=True)
    work = work.resolve()  # a Connect server has its own working folder
    t0 = time.perf_counter()
    featurize_days(session, raw.resolve(), [day], work / "card_features", DEFAULT_LABEL_DELAY_US)
    t1 = time.perf_counter()
    score_days(session, work / "card_features", [day], bundle, work / "scored")
    t2 = time.perf_counter()
    console.print(f"{name}: featurize {t1 - t0:.1f} s, score {t2 - t1:.1f} s")
    return day_rows(work / "scored", day)


def run_connect_nights(
    raw: Path, day: dt.date, bundle: ModelBundle, work: Path, master: str, nights: int
) -> list[Timing]:
    """The same steps through a long-lived Spark Connect server, once per night: the first
    night pays the server's cold JIT like a fresh session does, later nights find it warm."""
    from pyspark.sql import SparkSession

    from fraud_assets.lib.spark_session import server_config, session_config
    from fraud_devtools.spark_connect import LocalSparkConnect

    settings = AssetSettings.from_env()
    server = LocalSparkConnect(work / "server", server_config(settings), master)
    server.start()
    timings = []
    try:
        for night in range(1, nights + 1):
            t0 = time.perf_counter()
            remote = SparkSession.builder.remote(server.url)
            session = remote.config(map=session_config(settings)).getOrCreate()
            rows = featurize_and_score(
                session, raw, day, bundle, work / "out", f"Spark Connect night {night}"
            )
            timings.append(Timing(f"night {night}", time.perf_counter() - t0, rows))
            session.stop()
    finally:
        server.stop()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows in the scored day")
    parser.add_argument("--lookback-days", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("data/bench/batch"))
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument(
        "--connect-nights", type=int, default=2,
        help="nights run through one local Spark Connect server (0: none); the first is cold",
    )  # fmt: skip
    parser.add_argument(
        "--cluster-workers", type=int, default=0,
        help="also run on a local standalone cluster of this many 1-core workers (0: no)",
    )  # fmt: skip
    parser.add_argument(
        "--event-log", type=Path, help="write Spark's event log here (read by bench.spark_stages)"
    )
    parser.add_argument(
        "--java-home", default=os.environ.get("FRAUD_ASSETS_JAVA_HOME", "auto"),
        help="the Spark driver's JDK, as FRAUD_ASSETS_JAVA_HOME: auto (the newest installed; "
        "a JDK 25 gets an AOT cache, recorded first on separate small data if missing), "
        "empty for JAVA_HOME or java on PATH, or a JDK folder",
    )  # fmt: skip
    args = parser.parse_args()
    jdk, aot = prepare_jdk(args.java_home)
    work: Path = args.workdir
    shutil.rmtree(work / "out", ignore_errors=True)
    days = args.lookback_days + 1
    cards = max(1000, int(args.rows / 2.05))
    config = SimulationConfig(days=days, cards=cards, merchants=max(500, cards // 100), seed=5)
    raw = work / f"raw-{args.rows}-{days}"
    if not raw.exists():
        console.print(f"generating {days} days with {cards:,} cards into {raw}")
        generate(config, raw)
    target = config.start + dt.timedelta(days=days - 1)
    files = sorted(str(p) for p in raw.rglob("*.parquet"))
    bundle = make_model(work)
    start_us = (
        int(dt.datetime(target.year, target.month, target.day, tzinfo=dt.UTC).timestamp()) * 10**6
    )
    end_us = start_us + 24 * HOUR_US

    t0 = time.perf_counter()
    with PeakMemory() as peak:
        peer_rows = run_duckdb(files, start_us, end_us, bundle, work / "out" / "duckdb")
    peer = Timing("DuckDB + onnxruntime (1 process)", time.perf_counter() - t0, peer_rows, peak.mb)
    t0 = time.perf_counter()
    with PeakMemory() as peak:
        spark_rows, startup = run_spark(
            raw, target, bundle, work / "out" / "spark", args.spark_master, args.event_log
        )
    java = f"Java {jdk.major}{' + AOT cache' if aot else ''}" if jdk else "Java"
    name = f"fraudscale Spark {args.spark_master}, {java} (assets' code)"
    ours = Timing(name, time.perf_counter() - t0, spark_rows, peak.mb)
    clustered = run_cluster(raw, target, bundle, work, args.cluster_workers, java) if (
        args.cluster_workers
    ) else None  # fmt: skip

    nights = run_connect_nights(
        raw, target, bundle, work / "out" / "connect", args.spark_master, args.connect_nights
    ) if args.connect_nights else []  # fmt: skip

    peer_scores = scores_of(work / "out" / "duckdb")
    checks = {"Spark": parity(scores_of(work / "out" / "spark" / "scored"), peer_scores)}
    if nights:
        connect = scores_of(work / "out" / "connect" / "out" / "scored")
        checks["Spark Connect"] = parity(connect, peer_scores)
    warm = nights[1:]  # the server has run the job before: every night after its first
    if clustered is not None:
        checks["Spark standalone cluster"] = parity(
            scores_of(work / "out" / "cluster" / "scored"), peer_scores
        )
    rows = [peer, ours, *([clustered] if clustered else [])]
    if warm:
        best = min(warm, key=lambda t: t.seconds)
        name = f"fraudscale Spark Connect {args.spark_master}, {best.name}"
        rows.append(Timing(name, best.seconds, best.rows))

    table = Table(
        title=f"batch: 1 day of {spark_rows:,} transactions (+{args.lookback_days} look-back days)"
    )
    for column in ("pipeline", "seconds", "rows/s", "vs DuckDB", "peak memory"):
        table.add_column(column, justify="right")
    for timing in rows:
        table.add_row(
            timing.name, f"{timing.seconds:.1f}", f"{timing.rows / timing.seconds:,.0f}",
            f"{timing.seconds / peer.seconds:.2f}x",
            "-" if math.isnan(timing.peak_mb) else f"{timing.peak_mb:,.0f} MB",
        )  # fmt: skip
    console.print(table)
    if nights:
        each = ", ".join(f"{t.name} {t.seconds:.1f} s" for t in nights)
        console.print(f"Spark Connect server (started before night 1, not timed): {each}")
    for name, (same_ids, max_diff) in checks.items():
        console.print(
            f"{name} vs DuckDB: same rows {same_ids}; max |score difference| {max_diff:.2e}"
        )
    console.print(
        f"Spark session start-up {startup:.1f} s (included in the local run); features: "
        f"{len(STATEFUL_FEATURES)} stateful + {len(FEATURE_NAMES) - len(STATEFUL_FEATURES)} "
        "stateless"
    )
    same_ids, max_diff = checks["Spark"]
    record_result(
        "batch",
        {
            "rows": spark_rows,
            "lookback_days": args.lookback_days,
            "duckdb_seconds": peer.seconds,
            "spark_seconds": ours.seconds,
            "duckdb_peak_mb": peer.peak_mb,
            "spark_peak_mb": ours.peak_mb,
            "cluster_seconds": clustered.seconds if clustered else None,
            "cluster_peak_mb": clustered.peak_mb if clustered else None,
            "cluster_parity": checks.get("Spark standalone cluster"),
            "spark_startup_seconds": startup,
            "ratio": ours.seconds / peer.seconds,
            "same_rows": same_ids,
            "max_score_difference": max_diff,
            "connect_night_seconds": [t.seconds for t in nights],
            "connect_parity": checks.get("Spark Connect"),
            "java": jdk.version if jdk else None,
            "aot_cache": aot is not None,
        },
    )


def scores_of(folder: Path) -> pa.Table:
    return (
        ds.dataset(folder, format="parquet")
        .to_table(columns=["transaction_id", "score"])
        .sort_by("transaction_id")
    )


def parity(ours: pa.Table, peer: pa.Table) -> tuple[bool, float]:
    """Whether both scored the same transactions, and the largest score difference."""
    same = ours.column("transaction_id").equals(peer.column("transaction_id"))
    if not same:
        return False, float("nan")
    diff = ours.column("score").to_numpy() - peer.column("score").to_numpy()
    return True, float(np.max(np.abs(diff)))


if __name__ == "__main__":
    main()
