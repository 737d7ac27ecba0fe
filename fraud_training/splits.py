"""Time splits that respect the label delay: a model never trains on labels it could not have
had, and features never see labels before they were known."""

from __future__ import annotations

import datetime as dt
import math

from fraud_core.features import DAY_US


def delay_days(label_delay_us: int) -> int:
    """Whole days after a day before all of its labels are known."""
    return math.ceil(label_delay_us / DAY_US)


def labelled_days(days: list[dt.date], label_delay_us: int) -> list[dt.date]:
    """The days whose labels are all known by the end of the newest of `days`."""
    if not days:
        return []
    newest = max(days)
    cut = newest - dt.timedelta(days=delay_days(label_delay_us))
    return sorted(d for d in days if d <= cut)


def days_before_known(test_start: dt.date, train_days: int, label_delay_us: int) -> list[dt.date]:
    """The `train_days` days whose labels are all known when `test_start` begins."""
    last = test_start - dt.timedelta(days=delay_days(label_delay_us) + 1)
    return [last - dt.timedelta(days=i) for i in reversed(range(train_days))]
