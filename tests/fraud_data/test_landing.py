"""Bring-your-own data: CSV and Parquet read the same way; bad files are named precisely."""

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from fraud_core.schema import LABELLED_SCHEMA
from fraud_data.cli import main
from fraud_data.landing import LandingError, landing_days, read_landing

pytestmark = pytest.mark.unit


@pytest.fixture
def sample(history: pa.Table) -> pa.Table:
    return history.slice(0, 50)


def write_csv(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcsv.write_csv(table, path)
    return path


def test_simulated_landing_reads_as_the_contract(landing: Path, history: pa.Table) -> None:
    assert history.schema == LABELLED_SCHEMA
    assert len(landing_days(landing)) == 14
    one_day = read_landing(landing, days=[dt.date(2026, 1, 6)])
    assert 0 < one_day.num_rows < history.num_rows


def test_csv_and_parquet_with_extra_columns_read_the_same(tmp_path: Path, sample: pa.Table) -> None:
    extra = sample.append_column("note", pa.array(["x"] * sample.num_rows))
    (tmp_path / "a").mkdir()
    pq.write_table(extra, tmp_path / "a" / "x.parquet")
    write_csv(extra, tmp_path / "b" / "x.csv")
    from_parquet = read_landing(tmp_path / "a")
    from_csv = read_landing(tmp_path / "b")
    assert from_parquet.equals(sample)
    assert from_csv.equals(sample)


def test_naive_timestamps_are_utc(tmp_path: Path, sample: pa.Table) -> None:
    naive = sample.set_column(8, "timestamp", pc.local_timestamp(sample.column("timestamp")))
    pq.write_table(naive, tmp_path / "x.parquet")
    assert read_landing(tmp_path).column("timestamp").equals(sample.column("timestamp"))


def test_a_missing_column_names_the_file_and_column(tmp_path: Path, sample: pa.Table) -> None:
    path = write_csv(sample.drop_columns(["merchant_id"]), tmp_path / "day=2026-01-05" / "x.csv")
    with pytest.raises(LandingError) as info:
        read_landing(tmp_path)
    assert info.value.path == path
    assert info.value.column == "merchant_id"
    assert "missing" in str(info.value)


def test_a_bad_value_names_the_file_column_and_first_bad_row(
    tmp_path: Path, sample: pa.Table
) -> None:
    amounts = sample.column("amount").cast(pa.string()).to_pylist()
    amounts[7] = "twelve"
    amounts[9] = "oops"
    bad = sample.set_column(4, "amount", pa.array(amounts))
    path = write_csv(bad, tmp_path / "x.csv")
    with pytest.raises(LandingError) as info:
        read_landing(tmp_path)
    assert (info.value.path, info.value.column, info.value.row) == (path, "amount", 7)
    assert "'twelve'" in str(info.value)


def test_strict_reading_names_the_first_row_that_breaks_a_rule(
    tmp_path: Path, sample: pa.Table
) -> None:
    amounts = sample.column("amount").to_pylist()
    amounts[3] = -5.0
    pq.write_table(sample.set_column(4, "amount", pa.array(amounts)), tmp_path / "x.parquet")
    assert read_landing(tmp_path).num_rows == sample.num_rows  # lenient: the caller quarantines
    with pytest.raises(LandingError) as info:
        read_landing(tmp_path, strict=True)
    assert (info.value.column, info.value.row, info.value.reason) == ("amount", 3, "negative")


def test_validate_command_reports_quarantined_rows(
    tmp_path: Path, sample: pa.Table, capsys
) -> None:  # type: ignore[no-untyped-def]
    amounts = sample.column("amount").to_pylist()
    amounts[0] = -1.0
    pq.write_table(sample.set_column(4, "amount", pa.array(amounts)), tmp_path / "x.parquet")
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "49 valid rows, 1 rows to quarantine" in out
    assert "amount: negative" in out


def test_generate_and_summary_commands(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = [
        "generate",
        "--days",
        "2",
        "--cards",
        "500",
        "--merchants",
        "50",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert main(args) == 0
    assert main(["summary", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for expected in ("2026-01-05", "2026-01-06", "fraud rate"):
        assert expected in out
