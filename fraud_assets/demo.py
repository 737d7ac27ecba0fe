"""`make demo`: run the asset graph over the landed days into the local Dagster instance, then
publish the other training candidate as a canary on 10 % of cards.

`python -m fraud_assets.demo verdict DAY` (the stream demo runs it once it has streamed DAY,
with FRAUD_ASSETS_DECISION_LOG_BOOTSTRAP pointing at its broker): read DAY's decision log
from Kafka, log the batch path's decisions, and print the rollout verdict and the day's
online/offline feature skew."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import dagster as dg
import pyarrow.compute as pc
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from fraud_assets.defs.resources import (
    MlflowResource,
    StorageResource,
    resources_for,
    rollout_of,
)
from fraud_assets.lib.candidates import CHALLENGER, LIGHTGBM, load_candidate
from fraud_assets.lib.warehouse import read_days
from fraud_assets.runs import materialize_graph
from fraud_assets.settings import AssetSettings
from fraud_core.rollout import CANARY
from fraud_data.landing import landing_days

console = Console()
SCORED_DAYS = 7
CANARY_SHARE = 0.1


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SHORT_SEARCH = {"ops": {"fraud_model": {"config": {"tuning_trials": 6}}}}
"""A short parameter search keeps the demo to a few minutes; a nightly retrain searches more."""


def materialize(
    settings: AssetSettings,
    resources: dict[str, Any],
    selection: list[str],
    days: list[dt.date] | None = None,
) -> None:
    span = (days[0], days[-1]) if days else None
    console.print(
        f"[bold]materializing[/bold] {', '.join(selection)}"
        + (f" for {span[0]} .. {span[1]}" if span else "")
    )
    materialize_graph(
        selection,
        settings=settings,
        instance=dg.DagsterInstance.get(),
        resources=resources,
        days=span,
        run_config={**QUIET, **(SHORT_SEARCH if "fraud_model" in selection else {})},
    )


def main() -> int:
    settings = AssetSettings.from_env()
    resources = resources_for(settings)
    storage = resources["storage"]
    days = landing_days(storage.landing)
    if not days:
        console.print(f"[red]no landed days under {storage.landing}[/red]")
        return 1
    materialize(settings, resources, ["raw_transactions", "card_features"], days)
    materialize(
        settings,
        resources,
        ["training_set", "fraud_model", "onnx_model", "quantized_onnx_model", "published_model"],
    )
    scored_days = days[-SCORED_DAYS:]
    materialize(settings, resources, ["scored_transactions", "fraud_alerts"], scored_days)
    bundle = storage.model_store.load_champion()
    alerts = read_days(storage.table("fraud_alerts"), scored_days)
    summary = Table(title="fraudscale demo", show_header=False)
    summary.add_row("champion", f"{bundle.label} ({bundle.metadata.family})")
    summary.add_row("validation PR-AUC", f"{bundle.metadata.metrics['pr_auc']:.3f}")
    summary.add_row(
        "recall at 0.5 % alerts", f"{bundle.metadata.metrics['recall_at_alert_rate']:.1%}"
    )
    confirmed = int(pc.sum(alerts.column("is_fraud")).as_py() or 0)
    summary.add_row("alerts (scored days)", f"{alerts.num_rows:,}, {confirmed:,} confirmed fraud")
    summary.add_row("warehouse", str(storage.table("")))
    summary.add_row("model store", str(storage.model_store.root))
    summary.add_row("Dagster UI", "make dagster  ->  http://127.0.0.1:3000")
    summary.add_row("MLflow UI", "make mlflow-ui  ->  http://127.0.0.1:5000")
    console.print(summary)
    top = Table(title="top alerts")
    for column in ("transaction_id", "card_id", "amount", "score", "is_fraud", "reasons"):
        top.add_column(column)
    for row in alerts.sort_by([("score", "descending")]).slice(0, 5).to_pylist():
        top.add_row(
            row["transaction_id"], row["card_id"], f"{row['amount']:.2f}",
            f"{row['score']:.3f}", str(row["is_fraud"]), row["reasons"],
        )  # fmt: skip
    console.print(top)
    canary = publish_canary(storage, resources["mlflow_tracking"])
    if canary:
        console.print(
            f"canary: {canary} answers {CANARY_SHARE:.0%} of cards (by card hash) on REST and "
            "the stream from now on; recorded in MLflow (experiment fraudscale-rollout)"
        )
    return 0


def publish_canary(storage: StorageResource, tracking: MlflowResource) -> str | None:
    """The training candidate that did not become champion, published as canary."""
    champion = storage.model_store.champion_version()
    for kind in (LIGHTGBM, CHALLENGER):
        bundle = load_candidate(storage, kind).bundle
        if bundle.metadata.version != champion:
            rollout = rollout_of(storage, tracking)
            return rollout.publish(bundle, CANARY, share=CANARY_SHARE, reason="make demo")
    return None


def verdict(day: str) -> int:
    """Materialize the day's decision logs and verdict; print the verdict table."""
    settings = AssetSettings.from_env()
    resources = resources_for(settings)
    when = dt.date.fromisoformat(day)
    materialize(
        settings, resources,
        ["decision_log", "batch_decisions", "rollout_verdict", "feature_skew"], [when],
    )  # fmt: skip
    wide = Console(width=max(console.width, 160))
    console.print(f"[bold]rollout verdict for {day}[/bold] (also in the Dagster UI and MLflow)")
    wide.print(Markdown(_latest_metadata("rollout_verdict", "verdict")))
    console.print(
        f"[bold]feature skew for {day}[/bold]: the stream's served feature vectors against "
        "the Spark path's, row by row (the feature_skew asset)"
    )
    wide.print(Markdown(_latest_metadata("feature_skew", "report")))
    return 0


def _latest_metadata(asset: str, key: str) -> str:
    event = dg.DagsterInstance.get().get_latest_materialization_event(dg.AssetKey(asset))
    assert event is not None
    assert event.asset_materialization is not None
    value = event.asset_materialization.metadata[key]
    return str(getattr(value, "value", value))


if __name__ == "__main__":
    if sys.argv[1:2] == ["verdict"]:
        sys.exit(verdict(sys.argv[2]))
    sys.exit(main())
