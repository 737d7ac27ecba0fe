"""The nightly assets' figures for Prometheus, pushed to a Pushgateway.

A nightly run ends long before Prometheus could scrape it, so it pushes its figures, as
Prometheus advises for batch jobs: one group per asset (job `fraudscale-assets`, label
`asset`), replaced on every push, so a figure is the last run's. The Pushgateway adds
`push_time_seconds`, which the rules use to notice a night that did not report. A failed
push is logged and the asset still succeeds: monitoring must not stop the scoring.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

JOB = "fraudscale-assets"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Figure:
    """One gauge family: its name, help, label names and values by label values."""

    name: str
    help: str
    labels: Sequence[str]
    values: Mapping[tuple[str, ...], float]


PSI = "fraudscale_batch_score_psi"
SKEW_RATIO = "fraudscale_feature_skew_mismatch_ratio"
SKEW_ROWS = "fraudscale_feature_skew_rows_compared"
SKEW_MISMATCHED = "fraudscale_feature_skew_mismatched_rows"


def psi_figures(model_version: str, psi: float) -> list[Figure]:
    return [
        Figure(
            PSI,
            "Population stability index of the last nightly day's scores against the model's "
            "validation baseline (above 0.2: the distribution moved).",
            ["model_version"],
            {(model_version,): psi},
        )
    ]


def skew_figures(
    rows_by_path: Mapping[str, int],
    mismatched_by_path: Mapping[str, int],
    mismatched_by_path_and_cause: Mapping[tuple[str, str], int],
) -> list[Figure]:
    return [
        Figure(
            SKEW_RATIO,
            "Share of the last checked day's online decisions whose served features differ "
            "from the offline ones, by path.",
            ["path"],
            {(p,): mismatched_by_path.get(p, 0) / n for p, n in rows_by_path.items() if n},
        ),
        Figure(
            SKEW_ROWS,
            "Online decisions the last skew check compared, by path.",
            ["path"],
            {(p,): float(n) for p, n in rows_by_path.items()},
        ),
        Figure(
            SKEW_MISMATCHED,
            "Online decisions of the last checked day whose features differ, by path and cause.",
            ["path", "cause"],
            {key: float(n) for key, n in mismatched_by_path_and_cause.items()},
        ),
    ]


def push(url: str, asset: str, figures: Sequence[Figure], timeout_s: float = 5.0) -> bool:
    """Replace the asset's group on the Pushgateway at `url` with `figures`; False when the
    push failed (logged)."""
    if not url:
        return False
    registry = CollectorRegistry()
    for figure in figures:
        gauge = Gauge(figure.name, figure.help, list(figure.labels), registry=registry)
        for key, value in figure.values.items():
            (gauge.labels(*key) if figure.labels else gauge).set(value)
    try:
        push_to_gateway(
            url, job=JOB, grouping_key={"asset": asset}, registry=registry, timeout=timeout_s
        )
    except OSError as exc:
        log.warning("pushing %s's figures to %s failed: %s", asset, url, exc)
        return False
    return True
