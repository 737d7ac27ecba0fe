"""Ingest keeps every landed row: valid ones in raw_transactions, the rest quarantined."""

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fraud_assets.defs.ingest.assets import QUARANTINE_TABLE, ingest_day
from fraud_assets.defs.resources import StorageResource
from fraud_assets.lib.warehouse import read_days
from tests.conftest import with_unknown_labels

pytestmark = pytest.mark.unit


DAY = dt.date(2026, 1, 6)


def day_rows(history: pa.Table, day: dt.date = DAY) -> pa.Table:
    return history.filter(
        pc.equal(pc.strftime(history.column("timestamp"), "%Y-%m-%d"), day.isoformat())
    )


def land(tmp_path: Path, rows: pa.Table, day: dt.date = DAY) -> StorageResource:
    """`rows` landed as `day`'s file; the storage that ingests them."""
    folder = tmp_path / "landing" / f"day={day}"
    folder.mkdir(parents=True)
    pq.write_table(rows, folder / "x.parquet")
    return StorageResource(
        landing_dir=str(tmp_path / "landing"), warehouse_dir=str(tmp_path / "wh")
    )


def test_rows_whose_label_is_unknown_are_kept_as_unlabelled(
    tmp_path: Path, history: pa.Table
) -> None:
    rows = with_unknown_labels(day_rows(history))
    storage = land(tmp_path, rows)
    result = ingest_day(storage, DAY)
    assert (result["rows"], result["quarantined_rows"]) == (rows.num_rows, 0)
    assert result["labelled_rows"] == rows.num_rows - rows.column("is_fraud").null_count
    kept = read_days(storage.table("raw_transactions"), [DAY])
    assert kept.column("is_fraud").null_count == rows.column("is_fraud").null_count > 0


def test_bad_rows_are_quarantined_with_reasons_and_counted(
    tmp_path: Path, history: pa.Table
) -> None:
    day = DAY
    rows = day_rows(history)
    amounts = rows.column("amount").to_pylist()
    amounts[0] = -4.0
    stamps = rows.column("timestamp").to_pylist()
    stamps[1] = stamps[1] + dt.timedelta(days=2)
    landed = rows.set_column(4, "amount", pa.array(amounts)).set_column(
        8, "timestamp", pa.array(stamps, pa.timestamp("us", tz="UTC"))
    )
    storage = land(tmp_path, landed)

    result = ingest_day(storage, day)

    assert result["rows"] == rows.num_rows - 2
    assert result["quarantined_rows"] == 2
    assert result["reasons"] == {"amount: negative": 1, f"timestamp: not on {day}": 1}
    kept = read_days(storage.table("raw_transactions"), [day])
    quarantined = read_days(storage.table(QUARANTINE_TABLE), [day])
    assert kept.num_rows + quarantined.num_rows == rows.num_rows
    assert sorted(quarantined.column("transaction_id").to_pylist()) == sorted(
        rows.column("transaction_id").to_pylist()[:2]
    )
