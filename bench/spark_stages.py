"""Where a Spark run's time went: one line per stage from an event log written by
`bench.batch --event-log DIR`.

    uv run python -m bench.spark_stages data/bench/events

Times are seconds from the first stage's submission; stages overlap. `run` is the tasks'
summed wall time, `cpu` their summed JVM CPU time (Python workers not included).
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _metric(metrics: dict[str, Any], name: str, scale: float) -> float:
    return float(metrics.get(f"internal.metrics.{name}") or 0) / scale


def stage_rows(log: Path) -> list[dict[str, float | int | str]]:
    """Completed stages of one uncompressed event log, in submission order."""
    rows = []
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["Event"] != "SparkListenerStageCompleted":
            continue
        info = event["Stage Info"]
        metrics = {a["Name"]: a.get("Value") for a in info.get("Accumulables", [])}
        metric = functools.partial(_metric, metrics)
        rows.append(
            {
                "stage": info["Stage ID"],
                "submitted": info["Submission Time"] / 1000,
                "seconds": (info["Completion Time"] - info["Submission Time"]) / 1000,
                "tasks": info["Number of Tasks"],
                "run": metric("executorRunTime", 1e3),
                "cpu": metric("executorCpuTime", 1e9),
                "gc": metric("jvmGCTime", 1e3),
                "shuffle_mb": metric("shuffle.write.bytesWritten", 1e6),
                "rows_read": int(metric("input.recordsRead", 1)),
            }
        )
    return sorted(rows, key=lambda r: float(r["submitted"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("event_log_dir", type=Path)
    args = parser.parse_args()
    log = max(args.event_log_dir.iterdir(), key=lambda p: p.stat().st_mtime)
    if log.is_dir():  # a rolling log (Spark's default): its events file
        log = next(log.glob("events_*"))
    rows = stage_rows(log)
    start = float(rows[0]["submitted"]) if rows else 0.0
    table = Table(title=f"Spark stages of {log.name}")
    for column in ("stage", "start s", "wall s", "tasks", "run s", "cpu s", "gc s", "shuffle MB",
                   "rows read"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["stage"]), f"{float(r['submitted']) - start:.1f}", f"{r['seconds']:.1f}",
            str(r["tasks"]), f"{r['run']:.1f}", f"{r['cpu']:.1f}", f"{r['gc']:.1f}",
            f"{r['shuffle_mb']:.0f}", f"{r['rows_read']:,}",
        )  # fmt: skip
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
