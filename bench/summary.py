"""One table of the three benchmarks' ratios, from their last runs (bench/results/*.json),
beside the targets the project holds them to. `make bench` runs the three briefly, then this.

Ratios only: the machine's speed moves both sides of each, so a ratio from one run is what
compares across hours; absolute figures are in each benchmark's own table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import RESULTS


@dataclass(frozen=True)
class Target:
    benchmark: str
    what: str
    value: Callable[[dict[str, Any]], float | None]
    goal: str
    met: Callable[[float], bool]


def _night(result: dict[str, Any]) -> float | None:
    nights = result.get("connect_night_seconds") or []
    return min(nights) / result["duckdb_seconds"] if nights else None


def _p99_c64(result: dict[str, Any]) -> float | None:
    found = [
        p["p99_ms"] for p in result["points"]
        if p["server"] == "fraudscale (Litestar)" and p["path"] == "/v1/score full path"
        and p["concurrency"] == 64
    ]  # fmt: skip
    return found[0] if found else None


TARGETS = (
    Target("streaming", "Faust worker / plain aiokafka loop",
           lambda r: r["throughput_ratio"], ">= 0.8", lambda v: v >= 0.8),
    Target("streaming", "rollout on / off (decision log, shadow, canary)",
           lambda r: r["rollout_ratio"], ">= 0.9", lambda v: v >= 0.9),
    Target("streaming", "worker + rollout p99 at 1,000/s after the warm-up, ms",
           lambda r: r.get("worker_p99_ms"), "<= 10", lambda v: v <= 10),
    Target("batch", "Spark fresh local session / DuckDB + ORT",
           lambda r: r["ratio"], "<= 1.5", lambda v: v <= 1.5),
    Target("batch", "warm Spark Connect night / DuckDB + ORT", _night, "<= 1.2",
           lambda v: v <= 1.2),
    Target("serving", "full path / MLServer's best",
           lambda r: r["ratios"]["full path vs MLServer best (V2)"], "", lambda v: True),
    Target("serving", "full path / ceiling at c16",
           lambda r: r["ratios"].get("full path vs ceiling at c16"), ">= 0.75",
           lambda v: v >= 0.75),
    Target("serving", "full path / ceiling at c64",
           lambda r: r["ratios"].get("full path vs ceiling at c64"), ">= 0.75",
           lambda v: v >= 0.75),
    Target("serving", "full path p99 at c64, ms", _p99_c64, "<= 5", lambda v: v <= 5),
    Target("serving", "full path with the rollout / MLServer's best",
           lambda r: r["ratios"]["full path with rollout vs MLServer best (V2)"], ">= 5",
           lambda v: v >= 5),
    Target("serving", "rollout on / off",
           lambda r: r["ratios"]["full path, rollout on vs off"], ">= 0.9", lambda v: v >= 0.9),
)  # fmt: skip


def load(folder: Path = RESULTS) -> dict[str, dict[str, Any]]:
    out = {}
    for name in ("serving", "streaming", "batch"):
        path = folder / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def table(results: dict[str, dict[str, Any]]) -> Table:
    out = Table(title="benchmarks: ratios of the last runs (bench/results/)")
    columns = [("benchmark", "left"), ("ratio", "left"), ("value", "right"),
               ("target", "right"), ("met", "center"), ("run at", "left")]  # fmt: skip
    for column, justify in columns:
        out.add_column(column, justify=justify)  # type: ignore[arg-type]
    for target in TARGETS:
        result = results.get(target.benchmark)
        value = target.value(result) if result else None
        if value is None:
            out.add_row(target.benchmark, target.what, "—", target.goal, "", "not run")
            continue
        out.add_row(
            target.benchmark, target.what, f"{value:.3f}", target.goal,
            ("yes" if target.met(value) else "no") if target.goal else "",
            str(result.get("when", "")),  # type: ignore[union-attr]
        )  # fmt: skip
    return out


def main() -> None:
    Console(width=140).print(table(load()))


if __name__ == "__main__":
    main()
