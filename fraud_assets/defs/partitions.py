"""The daily partitions every day-grained asset shares."""

import datetime as dt

import dagster as dg

from fraud_assets.lib.warehouse import days_between
from fraud_core.features import label_lookback_days


def daily_partitions(start_date: str) -> dg.DailyPartitionsDefinition:
    """One partition per UTC day from `start_date` (AssetSettings.start_date) on."""
    return dg.DailyPartitionsDefinition(start_date=start_date, timezone="UTC")


def look_back(label_delay_us: int) -> dg.TimeWindowPartitionMapping:
    """A day of features depends on that day and the look-back days before it (the merchant
    windows' labels, known `label_delay_us` after their transactions)."""
    return dg.TimeWindowPartitionMapping(
        start_offset=-label_lookback_days(label_delay_us),
        end_offset=0,
        allow_nonexistent_upstream_partitions=True,
    )


single_run = dg.BackfillPolicy.single_run()
"""A backfill of many days is one run (one Spark job), not one run per day."""


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days of this run: one, or a whole range under a single-run backfill."""
    window = context.partition_time_window
    return days_between(window.start.date(), window.end.date())
