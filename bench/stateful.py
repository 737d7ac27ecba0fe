"""The stateful step of a stream batch with labelled merchants: the specification against
what the worker runs.

`bench.streaming` sends no labels, so its merchant states are empty; a deployment's hold up
to a month of labelled hours each. This times the stateful features of 500-transaction
batches (one hour of 400 cards over 200 merchants, ten batches an hour, for `--hours` hours)
with every merchant holding `--label-hours` labelled hours and every card ~80 transactions:

- the specification: a merchant's entry decoded once a batch, its risk and the card windows
  worked out for each transaction one window at a time (`merchant_features_reference`,
  `card_features_reference`; what the worker did before session 22);
- the worker's: the card windows by the function generated from the specs (`card_features`),
  a merchant's risk asked once per merchant and hour of a batch (`streaming.scoring.HourlyRisk`,
  as `score_transactions` does) and remembered per (encoded entry, hour) (`entry_risk`).

Both give the same values (checked on every batch). Medians per transaction; a batch that
opens an hour pays for each merchant's risk once, the others find it remembered.

    uv run python -m bench.stateful
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from bench import record_result
from fraud_core.features import DAY_US, HOUR_US
from fraud_core.state import (
    CardEvent,
    CardState,
    MerchantState,
    add_card_event,
    card_features,
    card_features_reference,
    merchant_features_reference,
)
from streaming.scoring import (
    HourlyRisk,
    MerchantEntry,
    decode_merchant_entry,
    encode_entry,
    entry_risk,
)

Batch = list[tuple[CardState, str, CardEvent]]


def specification(batch: Batch, entries: dict[str, bytes]) -> list[list[float]]:
    states: dict[str, MerchantState] = {}
    out = []
    for card, merchant, event in batch:
        if merchant not in states:
            states[merchant] = decode_merchant_entry(entries[merchant]).state
        risk = merchant_features_reference(states[merchant], event.ts_us)
        out.append(card_features_reference(card, event) + risk)
    return out


def worker(batch: Batch, entries: dict[str, bytes]) -> list[list[float]]:
    risks = HourlyRisk(lambda merchant, hour: entry_risk(entries[merchant], hour))
    return [
        card_features(card, event) + risks[merchant, event.ts_us // HOUR_US]
        for card, merchant, event in batch
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--label-hours", type=int, default=720, help="labelled hours a merchant")
    parser.add_argument("--hours", type=int, default=3, help="hours of batches (10 an hour)")
    args = parser.parse_args()
    rng = random.Random(3)
    start = 500_000  # an hour since the epoch
    entries = {
        f"m{i}": encode_entry(
            MerchantEntry(i, MerchantState(
                hours=list(range(start - args.label_hours, start)),
                labelled=[rng.randint(1, 5) for _ in range(args.label_hours)],
                fraud=[rng.randint(0, 1) for _ in range(args.label_hours)],
            ))
        )
        for i in range(200)
    }  # fmt: skip
    cards = []
    for _ in range(400):
        card, ts = CardState(), (start - 720) * HOUR_US
        for _ in range(80):
            ts += rng.randint(1, 2 * DAY_US // 3)
            add_card_event(card, CardEvent(ts, rng.uniform(1, 500), f"m{rng.randrange(200)}", "DE"))
        cards.append(card)
    times: dict[str, list[float]] = {"specification": [], "worker": []}
    steps: dict[str, Callable[[Batch, dict[str, bytes]], list[list[float]]]] = {
        "specification": specification,
        "worker": worker,
    }
    for i in range(10 * args.hours):
        hour = start + i // 10
        batch = [
            (
                rng.choice(cards),
                merchant := f"m{rng.randrange(200)}",
                CardEvent(hour * HOUR_US + rng.randrange(HOUR_US), 10.0, merchant, "FR"),
            )
            for _ in range(500)
        ]
        values = []
        for name, step in steps.items():
            began = time.perf_counter()
            values.append(step(batch, entries))
            times[name].append((time.perf_counter() - began) / len(batch) * 1e6)
        if values[0] != values[1]:
            raise AssertionError(f"batch {i}: the worker's features differ from the specification")
    spec, ours = (statistics.median(times[name]) for name in steps)
    table = Table(title=f"stateful features, merchants with {args.label_hours} labelled hours")
    for column in ("step", "µs a transaction (median batch)", "ratio"):
        table.add_column(column, justify="right")
    table.add_row("specification (reference loops)", f"{spec:.1f}", "1.00")
    table.add_row("worker (generated, remembered)", f"{ours:.1f}", f"{spec / ours:.1f}x faster")
    Console().print(table)
    record_result("stateful", {"label_hours": args.label_hours, "specification_us": spec,
                               "worker_us": ours})  # fmt: skip


if __name__ == "__main__":
    main()
