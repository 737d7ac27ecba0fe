"""Online/offline feature skew, row by row.

The REST service and the stream workers log the feature vector each decision was made on
(fraud_core.rollout.DecisionRecord). The skew check sets each one beside the same
transaction's features recomputed offline, by the Spark path (the `card_features` table's
window functions, then fraud_core.features.feature_matrix under the contract of the model
that decided), and reports, per feature, how many rows differ beyond float32 rounding.

Each differing row is given the first cause that explains it:

- `degraded`: served without the card's and merchant's state (Redis down or slow: the
  contract's defaults), as the record says;
- `late_or_out_of_order`: on its path, a later transaction of the card was decided before
  it, or it reached its path more than `late_after_us` later than the path's median delay
  that day (a replay or a backfill delays every decision alike, and none is late): the
  online state had moved past it, the offline windows see history in event-time order;
- `label_timing`: only label-derived (merchant) features differ: a label reached the online
  state at another time than its label time, or under another label delay;
- `unexplained`: none of these; a feature computed one way online and another offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fraud_core.features import (
    FEATURE_NAMES,
    MERCHANT_WINDOWS,
    MODEL_INPUT_COLUMNS,
    DataContract,
    feature_matrix,
)
from fraud_core.rollout import SHADOW

RTOL = 4 * float(np.finfo(np.float32).eps)
"""Relative difference two float32 features may have and still be equal (a few ulps: the
online state sums in another order than Spark's windows)."""
ATOL = 1e-6
CAUSES = ("degraded", "late_or_out_of_order", "label_timing", "unexplained")
LABEL_FEATURES = frozenset(s.name for s in MERCHANT_WINDOWS)
_LABEL_MASK = np.array([name in LABEL_FEATURES for name in FEATURE_NAMES])

SKEW_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("card_id", pa.string()),
        ("path", pa.string()),
        ("role", pa.string()),
        ("model_version", pa.string()),
        ("cause", pa.string()),
        ("features", pa.list_(pa.string())),
        ("online", pa.list_(pa.float32())),
        ("offline", pa.list_(pa.float32())),
        ("max_abs_delta", pa.float64()),
        ("event_time_us", pa.int64()),
        ("decision_time_us", pa.int64()),
    ]
)
"""One row per differing transaction and path: the two vectors and what differs."""


@dataclass(frozen=True)
class FeatureSkew:
    name: str
    rows: int
    mismatches: int
    max_abs_delta: float

    @property
    def rate(self) -> float:
        return self.mismatches / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class SkewReport:
    rows_by_path: dict[str, int]
    """Online decisions compared, by path."""
    mismatches_by_path: dict[str, int]
    features: list[FeatureSkew]
    causes: dict[str, int]
    mismatched: pa.Table
    """SKEW_SCHEMA rows, the largest difference first."""
    served_degraded: int = 0
    """Online decisions served without state (whether or not their vectors differ: a card
    and merchant without history look the same either way)."""
    not_in_warehouse: int = 0
    """Online decisions on transactions the warehouse does not hold for the day (never
    landed, or quarantined): not compared."""
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.rows_by_path.values())

    @property
    def mismatched_rows(self) -> int:
        return self.mismatched.num_rows

    @property
    def mismatch_rate(self) -> float:
        return self.mismatched_rows / self.rows if self.rows else 0.0


def served(log: pa.Table) -> pa.Table:
    """The decision log's rows to compare: one per transaction and online path, from the
    model that answered (champion or canary; a shadow record repeats a served vector)."""
    online = log.filter(
        pc.and_(pc.not_equal(log["role"], SHADOW), pc.not_equal(log["path"], "batch"))
    )
    keys = [
        f"{t}\x00{p}"
        for t, p in zip(
            online["transaction_id"].to_pylist(), online["path"].to_pylist(), strict=True
        )
    ]
    _, first = np.unique(np.array(keys, dtype=object), return_index=True)
    return online.take(pa.array(np.sort(first)))


def compare(
    online: pa.Table,
    offline: pa.Table | None,
    contracts: Mapping[str, DataContract],
    *,
    late_after_us: int,
) -> SkewReport:
    """`online`: served() rows of the decision log; `offline`: the day's `card_features` rows
    of those transactions (transaction_id plus MODEL_INPUT_COLUMNS); `contracts`: the
    contract of each model version in `online`."""
    if offline is None or not online.num_rows:
        empty = [FeatureSkew(name, 0, 0, 0.0) for name in FEATURE_NAMES]
        return SkewReport({}, {}, empty, dict.fromkeys(CAUSES, 0), SKEW_SCHEMA.empty_table())
    index = {t: i for i, t in enumerate(offline["transaction_id"].to_pylist())}
    ids = online["transaction_id"].to_pylist()
    present = np.array([t in index for t in ids], dtype=bool)
    missing = int((~present).sum())
    online = online.filter(pa.array(present))
    rows = np.array([index[t] for t in online["transaction_id"].to_pylist()], dtype=np.int64)
    served_x = _vectors(online)
    offline_x = np.empty_like(served_x)
    versions = online["model_version"].to_numpy(zero_copy_only=False)
    for version in np.unique(versions):
        mine = np.flatnonzero(versions == version)
        chosen = offline.take(pa.array(rows[mine]))
        columns = {name: chosen.column(name) for name in MODEL_INPUT_COLUMNS}
        offline_x[mine] = feature_matrix(columns, contracts[str(version)])
    delta = np.abs(served_x.astype(np.float64) - offline_x.astype(np.float64))
    differs = ~np.isclose(served_x, offline_x, rtol=RTOL, atol=ATOL, equal_nan=True)
    bad = np.flatnonzero(differs.any(axis=1))
    paths = online["path"].to_numpy(zero_copy_only=False)
    degraded = online["degraded"].fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    causes = _causes(online, differs, paths, degraded, late_after_us)
    features = [
        FeatureSkew(
            name, len(online), int(differs[:, j].sum()), float(delta[:, j].max(initial=0.0))
        )
        for j, name in enumerate(FEATURE_NAMES)
    ]
    worst = bad[np.argsort(-delta[bad].max(axis=1), kind="stable")]
    mismatched = _mismatched(online, worst, differs, served_x, offline_x, delta, causes)
    return SkewReport(
        rows_by_path={str(p): int((paths == p).sum()) for p in np.unique(paths)},
        mismatches_by_path={str(p): int((paths[bad] == p).sum()) for p in np.unique(paths)},
        features=features,
        causes={c: int((causes[bad] == c).sum()) for c in CAUSES},
        mismatched=mismatched,
        served_degraded=int(degraded.sum()),
        not_in_warehouse=missing,
    )


def _vectors(online: pa.Table) -> np.ndarray:
    column = online["features"].combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return (
        flat.reshape(len(online), -1)
        if len(online)
        else np.empty((0, len(FEATURE_NAMES)), np.float32)
    )


def _causes(
    online: pa.Table,
    differs: np.ndarray,
    paths: np.ndarray,
    degraded: np.ndarray,
    late_after_us: int,
) -> np.ndarray:
    n = len(online)
    event = online["event_time_us"].to_numpy()
    decided = online["decision_time_us"].to_numpy()
    lag = decided - event
    late = np.zeros(n, dtype=bool)
    for path in np.unique(paths):
        mine = paths == path
        late[mine] = lag[mine] - np.median(lag[mine]) > late_after_us
    late |= _overtaken(paths.tolist(), online["card_id"].to_pylist(), event, decided)
    only_labels = differs.any(axis=1) & ~(differs & ~_LABEL_MASK).any(axis=1)
    out = np.full(n, "unexplained", dtype=object)
    out[only_labels] = "label_timing"
    out[late] = "late_or_out_of_order"
    out[degraded] = "degraded"
    return out


def _overtaken(
    paths: list[str], cards: list[str], event: np.ndarray, decided: np.ndarray
) -> np.ndarray:
    """Rows whose card had, on the same path, a later transaction decided strictly before
    them."""
    out = np.zeros(len(paths), dtype=bool)
    order = np.lexsort((event, decided))
    newest: dict[tuple[str, str], tuple[int, int]] = {}  # (path, card) -> (event, decided)
    for i in order:
        key = (paths[i], cards[i])
        seen = newest.get(key)
        if seen is not None and seen[0] > event[i] and seen[1] < decided[i]:
            out[i] = True
        if seen is None or event[i] > seen[0]:
            newest[key] = (int(event[i]), int(decided[i]))
    return out


def _mismatched(
    online: pa.Table,
    rows: np.ndarray,
    differs: np.ndarray,
    served_x: np.ndarray,
    offline_x: np.ndarray,
    delta: np.ndarray,
    causes: np.ndarray,
) -> pa.Table:
    names = np.array(FEATURE_NAMES)
    picked = online.take(pa.array(rows, pa.int64()))
    return pa.table(
        {
            "transaction_id": picked["transaction_id"],
            "card_id": picked["card_id"],
            "path": picked["path"],
            "role": picked["role"],
            "model_version": picked["model_version"],
            "cause": pa.array(causes[rows].tolist(), pa.string()),
            "features": pa.array([names[differs[i]].tolist() for i in rows], pa.list_(pa.string())),
            "online": pa.array([served_x[i].tolist() for i in rows], pa.list_(pa.float32())),
            "offline": pa.array([offline_x[i].tolist() for i in rows], pa.list_(pa.float32())),
            "max_abs_delta": pa.array([float(delta[i].max()) for i in rows], pa.float64()),
            "event_time_us": picked["event_time_us"],
            "decision_time_us": picked["decision_time_us"],
        },
        schema=SKEW_SCHEMA,
    )


def markdown(report: SkewReport, worst: int = 10) -> str:
    """The report for the Dagster UI: totals, causes, the differing features and the worst
    transactions with both values of each differing feature."""
    lines = [
        f"**{report.mismatched_rows} of {report.rows}** online decisions differ from the "
        f"offline features ({report.mismatch_rate:.2e}); by path: "
        + ", ".join(
            f"{p} {report.mismatches_by_path.get(p, 0)}/{n}" for p, n in report.rows_by_path.items()
        ),
        "",
        f"{report.served_degraded} of them were served degraded (without state).",
        "",
        "| cause | rows |",
        "|---|---|",
        *(f"| {cause} | {n} |" for cause, n in report.causes.items()),
        "",
    ]
    differing = [f for f in report.features if f.mismatches]
    if differing:
        lines += ["| feature | rows | differ | rate | max abs delta |", "|---|---|---|---|---|"]
        lines += [
            f"| {f.name} | {f.rows} | {f.mismatches} | {f.rate:.2e} | {f.max_abs_delta:.6g} |"
            for f in differing
        ]
        lines.append("")
    if report.mismatched_rows:
        lines += [
            f"Worst {min(worst, report.mismatched_rows)} transactions "
            "(all of them in the `feature_skew` table):",
            "",
            "| transaction | path | role | cause | feature: online / offline |",
            "|---|---|---|---|---|",
        ]
        index = {name: j for j, name in enumerate(FEATURE_NAMES)}
        for row in report.mismatched.slice(0, worst).to_pylist():
            values = "; ".join(
                f"{name}: {row['online'][index[name]]:.6g} / {row['offline'][index[name]]:.6g}"
                for name in row["features"]
            )
            cells = [row["transaction_id"], row["path"], row["role"], row["cause"], values]
            lines.append("| " + " | ".join(cells) + " |")
    if report.not_in_warehouse:
        lines += [
            "",
            f"{report.not_in_warehouse} online decisions name transactions the warehouse "
            "does not hold for the day (not compared).",
        ]
    return "\n".join(lines)


def offline_inputs(
    session: SparkSession, card_features: Path, transaction_ids: list[str]
) -> pa.Table:
    """The model inputs of `transaction_ids` in a day folder of the `card_features` table
    (Spark's window functions computed them), as transaction_id plus MODEL_INPUT_COLUMNS:
    only the logged transactions reach the driver."""
    wanted = session.createDataFrame(
        pa.table({"transaction_id": pa.array(transaction_ids, pa.string())})
    )
    frame = (
        session.read.parquet(str(card_features))
        .withColumn("timestamp_us", F.unix_micros("timestamp"))
        .join(F.broadcast(wanted), "transaction_id")
        .select("transaction_id", *MODEL_INPUT_COLUMNS)
    )
    return frame.toArrow()
