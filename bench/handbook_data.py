"""A dataset in the style of the public simulator of the "Reproducible Machine Learning for
Credit Card Fraud Detection" handbook (Le Borgne et al., 2022): fraud patterns fraudscale's own
simulator does not have, to backtest on data we did not design.

Re-implemented here from the handbook's published description (chapter 3), vectorised:
- customers at random places on a 100 x 100 grid, each with a mean amount U(5, 100) (standard
  deviation half of it) and U(0, 4) transactions a day (Poisson);
- terminals at random places; a customer pays at terminals within radius 5 of home;
- a transaction's time of day ~ N(12 h, 20,000 s), clipped to the day;
- fraud 1: every amount above 220; fraud 2: each day 2 terminals are compromised for 28 days,
  every transaction there is fraud; fraud 3: each day 3 customers are compromised for 14 days,
  a third of their transactions are fraud with the amount times 5.

Mapped to the contract: card_id = customer, merchant_id = terminal; the handbook has no
category, currency, country or channel (constant here), and `scenario` (0-3) is kept as a
segment column. Labels arrive with the delay the backtest is given (the handbook uses 7 days).

    uv run python -m bench.handbook_data --out data/handbook      # 5,000 customers, 183 days
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fraud_core.schema import to_micros

DAY_S = 86_400


def generate(
    out: Path, customers: int = 5000, terminals: int = 10_000, days: int = 183, seed: int = 0,
    start: dt.date = dt.date(2018, 4, 1), radius: float = 5.0,
) -> int:  # fmt: skip
    """Write one Parquet file per day under `out` (day=YYYY-MM-DD/); returns the row count."""
    rng = np.random.default_rng(seed)
    home = rng.uniform(0, 100, (customers, 2))
    mean_amount = rng.uniform(5, 100, customers)
    per_day = rng.uniform(0, 4, customers)
    places = rng.uniform(0, 100, (terminals, 2))
    reachable = [
        np.flatnonzero(((places - home[c]) ** 2).sum(axis=1) < radius**2) for c in range(customers)
    ]
    has_terminal = np.array([len(r) > 0 for r in reachable])
    terminals_until = np.full(terminals, -1)  # compromised through this day
    customers_until = np.full(customers, -1)
    start_s = to_micros(dt.datetime.combine(start, dt.time(), dt.UTC)) // 1_000_000
    total = 0
    tx = 0
    for day in range(days):
        counts = np.where(has_terminal, rng.poisson(per_day), 0)
        who = np.repeat(np.arange(customers), counts)
        n = len(who)
        seconds = np.clip(rng.normal(DAY_S / 2, 20_000, n), 0, DAY_S - 1).astype(np.int64)
        amount = rng.normal(mean_amount[who], mean_amount[who] / 2)
        negative = amount < 0
        amount[negative] = rng.uniform(0, 2 * mean_amount[who[negative]])
        amount = np.round(amount, 2)
        pick = rng.random(n)
        terminal = np.array(
            [reachable[c][int(p * len(reachable[c]))] for c, p in zip(who, pick, strict=True)],
            dtype=np.int64,
        )
        # Compromised terminals and customers, chosen at the start of each day.
        terminals_until[rng.choice(terminals, 2, replace=False)] = day + 27
        customers_until[rng.choice(customers, 3, replace=False)] = day + 13
        scenario = np.zeros(n, dtype=np.int8)
        scenario[amount > 220] = 1
        scenario[(scenario == 0) & (terminals_until[terminal] >= day)] = 2
        stolen = (scenario == 0) & (customers_until[who] >= day) & (rng.random(n) < 1 / 3)
        amount[stolen] = np.round(amount[stolen] * 5, 2)
        scenario[stolen] = 3
        order = np.argsort(seconds, kind="stable")
        ts = (start_s + day * DAY_S + seconds[order]) * 1_000_000
        table = pa.table({
            "transaction_id": pa.array([f"h{i}" for i in range(tx, tx + n)]),
            "card_id": pa.array([f"C{c}" for c in who[order]]),
            "merchant_id": pa.array([f"T{t}" for t in terminal[order]]),
            "merchant_category": pa.array(["na"] * n),
            "amount": pa.array(amount[order]),
            "currency": pa.array(["EUR"] * n),
            "country": pa.array(["na"] * n),
            "channel": pa.array(["na"] * n),
            "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "is_fraud": pa.array(scenario[order] > 0),
            "scenario": pa.array(scenario[order].astype(np.int64)),
        })  # fmt: skip
        folder = out / f"day={(start + dt.timedelta(days=day)).isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "part-0.parquet")
        tx += n
        total += n
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("data/handbook"))
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = generate(args.out, args.customers, args.terminals, args.days, args.seed)
    print(f"{rows:,} transactions over {args.days} days in {args.out}")


if __name__ == "__main__":
    main()
