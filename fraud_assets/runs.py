"""Materializing the graph in-process, over a day range as a single-run backfill does."""

from __future__ import annotations

import datetime as dt
from typing import Any

import dagster as dg

from fraud_assets.definitions import asset_graph
from fraud_assets.settings import AssetSettings


def materialize_graph(
    selection: list[str],
    *,
    settings: AssetSettings,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    days: tuple[dt.date, dt.date] | None = None,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """One run of `selection`; with `days` (first, last), over that partition range."""
    assets, checks = asset_graph(settings)
    tags = {}
    if days is not None:
        tags = {
            "dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[1].isoformat(),
        }
    return dg.materialize(
        [*assets, *checks],
        selection=selection,
        instance=instance,
        resources=resources,
        tags=tags,
        run_config=run_config or {},
        raise_on_error=raise_on_error,
    )
