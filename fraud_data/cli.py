"""The `fraudscale` command: generate data, summarise it, check bring-your-own files."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fraud_core.bundle import BundleError
from fraud_core.features import CATEGORICAL_COLUMNS, DAY_US, unknown_share
from fraud_core.model_store import ModelStore
from fraud_core.schema import split_valid
from fraud_core.state import LABEL_TIME_COLUMN
from fraud_data.landing import LandingError, landing_files, read_landing
from fraud_data.simulator import SimulationConfig, generate

if TYPE_CHECKING:
    from fraud_training.backtest import Backtest

console = Console()


def _generate(args: argparse.Namespace) -> int:
    config = SimulationConfig(
        days=args.days,
        cards=args.cards,
        merchants=args.merchants,
        seed=args.seed,
        start=args.start,
        fraud_intensity=args.fraud_intensity,
    )
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=args.quiet) as progress:
        task = progress.add_task("generating days", total=config.days)

        def track(days: Iterator[int]) -> Iterator[int]:
            for day in days:
                yield day
                progress.advance(task)

        counts = generate(config, args.out, progress=track)
    total = sum(counts.values())
    console.print(f"wrote {total:,} transactions over {len(counts)} days to {args.out}")
    return 0


def summarise(root: Path) -> Table:
    """Per-day transaction counts and fraud, and the fraud count of each scenario."""
    dataset = ds.dataset(landing_files(root), format="parquet", partitioning="hive")
    wanted = [c for c in ("timestamp", "is_fraud", "scenario") if c in dataset.schema.names]
    data = dataset.to_table(columns=wanted)
    day = pc.strftime(data.column("timestamp"), format="%Y-%m-%d")
    fraud = (
        data.column("is_fraud").cast(pa.int64())
        if "is_fraud" in wanted
        else pa.nulls(len(day), pa.int64())
    )
    per_day = (
        pa.table({"day": day, "fraud": fraud})
        .group_by("day")
        .aggregate([([], "count_all"), ("fraud", "sum")])
        .sort_by("day")
    )
    table = Table(title=f"transactions in {root}")
    for name in ("day", "transactions", "fraud", "fraud rate"):
        table.add_column(name, justify="right")
    for row in per_day.to_pylist():
        n, f = row["count_all"], row["fraud_sum"] or 0
        table.add_row(row["day"], f"{n:,}", f"{f:,}", f"{f / n:.3%}")
    n, f = len(day), int(pc.sum(fraud).as_py() or 0)
    table.add_row("all", f"{n:,}", f"{f:,}", f"{f / max(n, 1):.3%}", style="bold")
    if "scenario" in wanted:
        scenarios = pa.table({"scenario": data.column("scenario").cast(pa.string())})
        counts = scenarios.group_by("scenario").aggregate([("scenario", "count")])
        for row in sorted(counts.to_pylist(), key=lambda r: r["scenario"]):
            if row["scenario"] != "legit":
                share = row["scenario_count"] / max(f, 1)
                table.add_row(
                    f"  {row['scenario']}",
                    "",
                    f"{row['scenario_count']:,}",
                    f"{share:.1%} of fraud",
                )
    return table


def _summary(args: argparse.Namespace) -> int:
    console.print(summarise(Path(args.path)))
    return 0


def _validate(args: argparse.Namespace) -> int:
    try:
        table = read_landing(args.path)
    except (LandingError, FileNotFoundError) as exc:
        console.print(f"[red]invalid:[/red] {exc}")
        return 1
    valid, rejected = split_valid(table)
    console.print(f"{valid.num_rows:,} valid rows, {rejected.num_rows:,} rows to quarantine")
    for row in rejected.slice(0, 10).to_pylist():
        console.print(f"  {row['transaction_id']}: {row['reason']}")
    if valid.num_rows:
        console.print(categories_report(valid, champion_vocabularies(args.models)))
        if "is_fraud" in valid.column_names:
            console.print(label_coverage(valid))
    return 1 if rejected.num_rows else 0


def champion_vocabularies(models: Path) -> dict[str, tuple[str, ...]] | None:
    """The published champion's vocabularies, or None when none is published there."""
    try:
        return ModelStore(models).load_champion().metadata.contract.vocabularies
    except BundleError:
        return None


def categories_report(table: pa.Table, vocabularies: dict[str, tuple[str, ...]] | None) -> Table:
    """Per categorical column: distinct values, and the share the champion cannot encode."""
    report = Table(title="categorical columns")
    for name in ("column", "distinct values", "top values", "unknown to the champion"):
        report.add_column(name)
    for column in CATEGORICAL_COLUMNS:
        values = table.column(column)
        counts = sorted(pc.value_counts(values).to_pylist(), key=lambda c: -c["counts"])
        share = (
            f"{unknown_share(values, vocabularies.get(column, ())):.1%}"
            if vocabularies is not None
            else "(no champion published)"
        )
        top = ", ".join(str(c["values"]) for c in counts[:5])
        report.add_row(column, f"{len(counts):,}", top, share)
    return report


def label_coverage(table: pa.Table) -> Table:
    """Per day: rows, the share with a known label, fraud among the labelled."""
    day = pc.strftime(table.column("timestamp"), format="%Y-%m-%d")
    labels = table.column("is_fraud")
    per_day = (
        pa.table({"day": day, "labelled": pc.is_valid(labels).cast(pa.int64()),
                  "fraud": pc.fill_null(labels, False).cast(pa.int64())})
        .group_by("day")
        .aggregate([([], "count_all"), ("labelled", "sum"), ("fraud", "sum")])
        .sort_by("day")
    )  # fmt: skip
    report = Table(title="label coverage by day")
    for name in ("day", "rows", "labelled", "fraud among labelled"):
        report.add_column(name, justify="right")
    for row in per_day.to_pylist():
        n, known, fraud = row["count_all"], row["labelled_sum"], row["fraud_sum"]
        report.add_row(row["day"], f"{n:,}", f"{known / n:.1%}",
                       f"{fraud / known:.3%}" if known else "-")  # fmt: skip
    return report


def backtest_report(result: Backtest) -> Table:
    """The backtest's metrics per test day and over the test period."""
    config = result.config
    title = (
        f"backtest: trained on {result.train_first}..{result.train_last} "
        f"({result.train_rows:,} rows, {result.train_frauds:,} fraud), "
        f"label delay {config.label_delay_us / DAY_US:g} days"
    )
    table = Table(title=title)
    for name in ("day", "transactions", "fraud", "ROC AUC", "avg precision",
                 f"card precision@{config.top_k}"):  # fmt: skip
        table.add_column(name, justify="right")
    for d in result.days:
        table.add_row(
            d.day.isoformat(), f"{d.transactions:,}", f"{d.frauds:,}", f"{d.roc_auc:.4f}",
            f"{d.average_precision:.4f}", f"{d.card_precision_at_k:.3f}",
        )  # fmt: skip
    table.add_row(
        "test period", f"{sum(d.transactions for d in result.days):,}",
        f"{sum(d.frauds for d in result.days):,}", f"{result.roc_auc:.4f}",
        f"{result.average_precision:.4f}", f"{result.card_precision_at_k:.3f} (mean)",
        style="bold",
    )  # fmt: skip
    table.caption = (
        f"recall at a {config.alert_rate:.1%} alert budget: {result.recall_at_alert_rate:.1%}"
        + "".join(
            f"; by {column}: " + ", ".join(f"{v} {r:.0%} of {n}" for v, (n, r) in values.items())
            for column, values in result.recall_by_segment.items()
        )
    )
    return table


def _backtest(args: argparse.Namespace) -> int:
    from fraud_training.backtest import BacktestConfig, backtest, plot
    from fraud_training.tuning import Tuning

    extra = [*args.segment, *([args.label_time_column] if args.label_time_column else [])]
    table = read_landing(args.path, extra=extra)
    if args.label_time_column and args.label_time_column != LABEL_TIME_COLUMN:
        table = table.rename_columns(
            [LABEL_TIME_COLUMN if c == args.label_time_column else c for c in table.column_names]
        )
    config = BacktestConfig(
        train_days=args.train_days,
        test_days=args.test_days,
        label_delay_us=round(args.label_delay * DAY_US),
        tuning=Tuning(trials=args.tune_trials, timeout_seconds=args.tune_seconds)
        if args.tune_trials
        else None,
    )
    with console.status("featurizing, training and scoring"):
        result = backtest(table, config)
    console.print(backtest_report(result))
    if args.plot:
        console.print(f"plot: {plot(result, args.plot)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fraudscale", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="simulate labelled transactions into day folders")
    gen.add_argument("--days", type=int, default=14)
    gen.add_argument("--cards", type=int, default=10_000)
    gen.add_argument("--merchants", type=int, default=1_000)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 1, 5))
    gen.add_argument("--fraud-intensity", type=float, default=1.0)
    gen.add_argument("--out", type=Path, default=Path("data/landing"))
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(run=_generate)
    summary = commands.add_parser("summary", help="per-day counts and fraud by scenario")
    summary.add_argument("path", type=Path)
    summary.set_defaults(run=_summary)
    validate = commands.add_parser("validate", help="check a folder of your own files")
    validate.add_argument("path", type=Path)
    validate.add_argument(
        "--models",
        type=Path,
        default=Path("data/models"),
        help="the model store whose champion's vocabularies to compare with",
    )
    validate.set_defaults(run=_validate)
    bt = commands.add_parser(
        "backtest", help="train and test fraudscale on your data, on a time split"
    )
    bt.add_argument("path", type=Path, help="folder of labelled transactions")
    bt.add_argument("--train-days", type=int, default=28)
    bt.add_argument("--test-days", type=int, default=7)
    bt.add_argument(
        "--label-delay",
        type=float,
        default=7.0,
        help="days until a label is known (rows without a label time)",
    )
    bt.add_argument(
        "--label-time-column",
        default="",
        help="a column with each label's own time, when the data has one",
    )
    bt.add_argument(
        "--segment", action="append", default=[], help="a column to report recall by (repeatable)"
    )
    bt.add_argument(
        "--tune-trials",
        type=int,
        default=0,
        help="hyper-parameter search trials (0: the default parameters)",
    )
    bt.add_argument("--tune-seconds", type=float, default=600.0)
    bt.add_argument("--plot", type=Path, default=None, help="write a PNG of the metrics by day")
    bt.set_defaults(run=_backtest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
