"""raw_transactions: landed transactions, validated per day; bad rows quarantined."""

import datetime as dt
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from fraud_assets.defs.partitions import partition_days, single_run
from fraud_assets.defs.resources import StorageResource
from fraud_assets.lib.warehouse import write_day
from fraud_core.schema import LABELLED_SCHEMA, split_valid
from fraud_data.landing import LandingError, read_landing

QUARANTINE_TABLE = "quarantined_transactions"


def outside_day(table: pa.Table, day: dt.date) -> pa.Array:
    dates = pc.strftime(table.column("timestamp"), format="%Y-%m-%d")
    return pc.fill_null(pc.not_equal(dates, day.isoformat()), False)


def ingest_day(storage: StorageResource, day: dt.date) -> dict[str, Any]:
    """Validate one landed day into raw_transactions; its bad rows, with reasons, to quarantine."""
    try:
        landed = read_landing(storage.landing, days=[day])
    except (LandingError, FileNotFoundError) as exc:
        raise dg.Failure(description=str(exc)) from None
    if landed.num_rows == 0:
        raise dg.Failure(description=f"no transactions landed for {day} under {storage.landing}")
    if "is_fraud" not in landed.column_names:
        landed = landed.append_column("is_fraud", pa.nulls(landed.num_rows, pa.bool_()))
    valid, rejected = split_valid(landed)
    stray = outside_day(valid, day)
    if pc.any(stray).as_py():
        moved = valid.filter(stray)
        reason = pa.array([f"timestamp: not on {day}"] * moved.num_rows)
        rejected = pa.concat_tables([rejected, moved.append_column("reason", reason)])
        valid = valid.filter(pc.invert(stray))
    write_day(storage.table("raw_transactions"), day, valid.cast(LABELLED_SCHEMA))
    write_day(storage.table(QUARANTINE_TABLE), day, rejected)
    reasons = pc.value_counts(rejected.column("reason")).to_pylist() if rejected.num_rows else []
    labelled = valid.column("is_fraud")
    return {
        "rows": valid.num_rows,
        "quarantined_rows": rejected.num_rows,
        "reasons": {r["values"]: r["counts"] for r in reasons},
        "fraud_rows": int(pc.sum(labelled).as_py() or 0),
        "labelled_rows": valid.num_rows - labelled.null_count,
    }


def raw_transactions(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    """Validated transactions of one day from the landing folder; bad rows quarantined."""
    per_day = {day.isoformat(): ingest_day(storage, day) for day in partition_days(context)}
    total = {
        key: sum(d[key] for d in per_day.values())
        for key in ("rows", "quarantined_rows", "fraud_rows", "labelled_rows")
    }
    reasons: dict[str, int] = {}
    for result in per_day.values():
        for reason, count in result["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    return dg.MaterializeResult(
        metadata={
            "rows": total["rows"],
            "quarantined_rows": total["quarantined_rows"],
            "quarantine_reasons": reasons,
            "labelled_rows": total["labelled_rows"],
            "fraud_rate": total["fraud_rows"] / max(total["labelled_rows"], 1),
            "days": list(per_day),
        }
    )


def build(daily: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The ingest assets on `daily` partitions."""
    return [
        dg.asset(
            partitions_def=daily, backfill_policy=single_run, group_name="ingest", kinds={"parquet"}
        )(raw_transactions),
    ]
