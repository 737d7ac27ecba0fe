"""Reading transactions from a landing folder: the simulator's output or your own files.

Any folder of Parquet or CSV files in the documented schema is read the same way. Files may
sit in Hive-style day folders (`day=YYYY-MM-DD/`), which lets a reader pick days without
opening the rest. Extra columns are ignored; `is_fraud`, when present, is kept (labelled
history). Timestamps without a time zone are taken as UTC.

A file that cannot be read as the schema (a missing column, a value of the wrong type) is an
error naming the file, the column and the first bad row. Rows that parse but break the schema's
rules (a negative amount, an empty id) are the caller's to quarantine (`split_valid`), or an
error when reading strictly.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from fraud_core.schema import LABELLED_SCHEMA, TRANSACTION_SCHEMA, row_problems

_DAY_DIR = re.compile(r"^day=(\d{4}-\d{2}-\d{2})$")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


class LandingError(ValueError):
    """A landing file that does not fit the schema: names the file, column and first bad row."""

    def __init__(self, path: Path, column: str, row: int | None, reason: str) -> None:
        self.path, self.column, self.row, self.reason = path, column, row, reason
        where = f", row {row}" if row is not None else ""
        super().__init__(f"{path}: column {column!r}{where}: {reason}")


def landing_files(
    root: str | os.PathLike[str], days: Iterable[dt.date] | None = None
) -> list[Path]:
    """Data files under `root`, sorted; with `days`, only those in matching day folders."""
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(f"landing folder {base} does not exist")
    wanted = {d.isoformat() for d in days} if days is not None else None
    files = []
    for path in sorted(base.rglob("*")):
        if path.suffix.lower() not in _SUFFIXES or not path.is_file():
            continue
        if any(part.startswith((".", "_")) for part in path.relative_to(base).parts):
            continue  # staging folders and markers of writers in progress
        if wanted is not None and file_day(path) not in wanted:
            continue
        files.append(path)
    return files


def file_day(path: Path) -> str | None:
    """The YYYY-MM-DD of the nearest `day=` folder above a file, if any."""
    for part in reversed(path.parts[:-1]):
        match = _DAY_DIR.match(part)
        if match:
            return match.group(1)
    return None


def landing_days(root: str | os.PathLike[str]) -> list[dt.date]:
    """The days that have a `day=` folder with data under `root`."""
    days = {file_day(p) for p in landing_files(root)}
    return sorted(dt.date.fromisoformat(d) for d in days if d)


def _read_raw(path: Path) -> pa.Table:
    try:
        if _SUFFIXES[path.suffix.lower()] == "parquet":
            return pq.read_table(path)
        # Read every CSV column as text, so a bad value is found and named by our cast below.
        names = pcsv.read_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 16)).column_names
        options = pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
        return pcsv.read_csv(path, convert_options=options)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LandingError(path, "", None, f"unreadable file: {exc}") from None


def _first_uncastable(column: pa.ChunkedArray, target: pa.DataType) -> tuple[int, object]:
    for i, value in enumerate(column.to_pylist()):
        try:
            pa.array([value]).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return i, value
    return -1, None


def _cast_column(
    path: Path, name: str, column: pa.ChunkedArray, field: pa.Field
) -> pa.ChunkedArray:
    source = column.type
    if pa.types.is_dictionary(source):
        column, source = column.cast(source.value_type), source.value_type
    target = field.type
    if pa.types.is_timestamp(target) and pa.types.is_timestamp(source) and source.tz is None:
        column = pc.assume_timezone(column, "UTC")
    if pa.types.is_boolean(target) and pa.types.is_string(source):
        lowered = pc.utf8_lower(column)
        truthy = pc.is_in(lowered, pa.array(["1", "true", "t", "yes"]))
        falsy = pc.is_in(lowered, pa.array(["0", "false", "f", "no"]))
        unknown = pc.and_(pc.invert(pc.or_(truthy, falsy)), pc.is_valid(lowered))
        if pc.any(unknown).as_py():
            row = pc.index(unknown, True).as_py()
            raise LandingError(path, name, row, f"{column[row].as_py()!r} is not a boolean")
        return pc.if_else(pc.is_null(lowered), pa.scalar(None, pa.bool_()), truthy)
    try:
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        row, value = _first_uncastable(column, target)
        detail = f"{value!r} is not {target}" if row >= 0 else str(exc)
        raise LandingError(path, name, row if row >= 0 else None, detail) from None


def read_file(path: Path, extra: Iterable[str] = ()) -> pa.Table:
    """One landing file in TRANSACTION_SCHEMA (plus `is_fraud` when the file has it, and the
    `extra` columns it has, as they are)."""
    raw = _read_raw(path)
    schema = LABELLED_SCHEMA if "is_fraud" in raw.column_names else TRANSACTION_SCHEMA
    columns = []
    for field in schema:
        if field.name not in raw.column_names:
            raise LandingError(path, field.name, None, "required column is missing")
        columns.append(_cast_column(path, field.name, raw.column(field.name), field))
    table = pa.Table.from_arrays(columns, schema=schema)
    for name in extra:
        if name in raw.column_names and name not in schema.names:
            table = table.append_column(name, raw.column(name))
    return table


def read_landing(
    root: str | os.PathLike[str],
    days: Iterable[dt.date] | None = None,
    *,
    strict: bool = False,
    extra: Iterable[str] = (),
) -> pa.Table:
    """All landing rows (of `days`, if given) as one table in the contract's schema, plus the
    `extra` columns the files have (for a backtest's label times and segments).

    Files are read and checked one by one; the first file that does not fit raises a
    LandingError and nothing is returned. With `strict`, a row that breaks the schema's rules
    raises too, naming its file, column and row.
    """
    extra = tuple(extra)
    tables = []
    for path in landing_files(root, days):
        table = read_file(path, extra)
        if strict:
            reasons = row_problems(table)
            if reasons.null_count != len(reasons):
                row = pc.index(pc.is_valid(reasons), True).as_py()
                column, _, reason = reasons[row].as_py().partition(": ")
                raise LandingError(path, column, row, reason)
        tables.append(table)
    if not tables:
        return LABELLED_SCHEMA.empty_table()
    labelled = all("is_fraud" in t.column_names for t in tables)
    if not labelled:
        tables = [t.drop_columns(["is_fraud"]) if "is_fraud" in t.column_names else t
                  for t in tables]  # fmt: skip
    return pa.concat_tables(tables, promote_options="permissive")
