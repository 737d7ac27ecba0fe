"""The daily partitions every day-grained asset shares."""

import datetime as dt
import math
import os

import dagster as dg

from fraud_assets.lib.warehouse import days_between
from fraud_core.features import CARD_RETENTION_US, DAY_US, LABEL_DELAY_US, MERCHANT_WINDOWS

START_DATE = os.environ.get("FRAUD_ASSETS_START_DATE", "2026-01-05")
"""First day of data (the simulator's default start)."""

daily = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC")

CARD_LOOKBACK_DAYS = math.ceil(CARD_RETENTION_US / DAY_US)
"""Days of transactions before a day that its card windows can reach."""

LABEL_LOOKBACK_DAYS = math.ceil(
    (max(s.window_us for s in MERCHANT_WINDOWS) + LABEL_DELAY_US) / DAY_US
)
"""Days before a day whose labels can be known, and counted by merchant windows, during it."""

LABEL_DELAY_DAYS = math.ceil(LABEL_DELAY_US / DAY_US)

look_back = dg.TimeWindowPartitionMapping(
    start_offset=-LABEL_LOOKBACK_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True
)
"""A day of features depends on that day and the look-back days before it."""

single_run = dg.BackfillPolicy.single_run()
"""A backfill of many days is one run (one Spark job), not one run per day."""


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days of this run: one, or a whole range under a single-run backfill."""
    window = context.partition_time_window
    return days_between(window.start.date(), window.end.date())
