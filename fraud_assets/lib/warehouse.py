"""Day-partitioned Parquet tables on a filesystem, replaced a whole day at a time.

    <root>/<table>/day=YYYY-MM-DD/part-*.parquet

A day is written into a staging folder beside the table and swapped in with renames, so a
re-run of a partition replaces it (never appends to it), and a reader or a crash never sees
half a day.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from fraud_data.simulator import DAY_PARTITION


def day_folder(table_root: Path, day: dt.date) -> Path:
    return table_root / f"{DAY_PARTITION}={day.isoformat()}"


def staging_folder(table_root: Path) -> Path:
    """A fresh folder beside the table (same filesystem, so renames are atomic)."""
    path = table_root.parent / f".staging-{table_root.name}-{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True)
    return path


def swap_in(staged_day: Path, final_day: Path) -> None:
    """Replace `final_day` with `staged_day` (both folders), never leaving a half state."""
    final_day.parent.mkdir(parents=True, exist_ok=True)
    retired = None
    if final_day.exists():
        retired = final_day.parent / f".retired-{final_day.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final_day, retired)
    os.replace(staged_day, final_day)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def write_day(table_root: Path, day: dt.date, table: pa.Table) -> Path:
    """Write one day's rows as the whole content of that day's partition."""
    staging = staging_folder(table_root)
    try:
        staged = staging / "day"
        staged.mkdir()
        pq.write_table(table, staged / "part-00000.parquet", row_group_size=1_000_000)
        final = day_folder(table_root, day)
        swap_in(staged, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_file(table: pa.Table, path: Path) -> Path:
    """Write one Parquet file atomically (readers see the old file or the whole new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def swap_in_days(staging_root: Path, table_root: Path) -> list[dt.date]:
    """Move every `day=` folder a writer (Spark) produced under `staging_root` into place."""
    days = []
    for staged in sorted(staging_root.glob(f"{DAY_PARTITION}=*")):
        day = dt.date.fromisoformat(staged.name.split("=", 1)[1])
        swap_in(staged, day_folder(table_root, day))
        days.append(day)
    return days


def existing_day_folders(table_root: Path, days: Iterable[dt.date]) -> list[Path]:
    return [p for p in (day_folder(table_root, d) for d in days) if p.exists()]


def read_days(
    table_root: Path, days: Iterable[dt.date], columns: list[str] | None = None
) -> pa.Table:
    """The rows of the given days that exist (missing days contribute nothing)."""
    folders = existing_day_folders(table_root, days)
    files = [f for folder in folders for f in sorted(folder.rglob("*.parquet"))]
    if not files:
        raise FileNotFoundError(f"no data for those days under {table_root}")
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    return dataset.to_table(columns=columns)


def day_rows(table_root: Path, day: dt.date) -> int:
    """Rows in a day's partition, from the Parquet footers (no data is read)."""
    folder = day_folder(table_root, day)
    return sum(pq.read_metadata(f).num_rows for f in folder.rglob("*.parquet"))


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Days in [start, end)."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]
