"""The `fraudscale` command: generate data, summarise it, check bring-your-own files."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fraud_core.schema import split_valid
from fraud_data.landing import LandingError, landing_files, read_landing
from fraud_data.simulator import SimulationConfig, generate

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
    return 1 if rejected.num_rows else 0


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
    validate.set_defaults(run=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
