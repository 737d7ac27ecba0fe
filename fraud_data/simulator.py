"""A transaction simulator with learnable fraud, deterministic by seed.

Legitimate traffic comes from card and merchant profiles: each card has a home country, a
spending level, a daily rate and favourite merchants; merchants have a category, a country and
a popularity. Traffic follows a daily cycle (quiet nights, lunch and evening peaks) and a
weekly one (busier weekends). Four fraud scenarios are mixed in:

* card_testing: a stolen card is probed with a burst of tiny online payments, often followed
  by one large purchase;
* compromised_merchant: a merchant is breached for some weeks, and part of its traffic is
  fraud (seen by the label-delayed merchant risk features);
* account_takeover: a run of large online payments from a country new to the card;
* night_large: one or two very large payments in the small hours.

Each day is generated from its own seed (seed, day index), so a day's rows do not depend on
how many days are generated around it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fraud_core.features import DAY_US
from fraud_core.schema import LABELLED_SCHEMA, MICROS_PER_SECOND, to_micros

MERCHANT_CATEGORIES = (
    "grocery",
    "restaurant",
    "fuel",
    "retail",
    "electronics",
    "travel",
    "digital_goods",
    "entertainment",
    "health",
    "utilities",
    "jewelry",
    "gambling",
    "cash",
)
CHANNELS = ("pos", "contactless", "ecom", "moto", "atm")
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK", "PLN", "CZK", "JPY", "BRL", "CAD", "AUD")
COUNTRIES = (
    "DE", "FR", "NL", "BE", "ES", "IT", "AT", "PT", "IE", "FI",
    "US", "GB", "CH", "SE", "PL", "CZ", "JP", "BR", "CA", "AU",
)  # fmt: skip
"""The simulated world's values of each categorical column."""


SCENARIOS = ("legit", "card_testing", "compromised_merchant", "account_takeover", "night_large")
DAY_PARTITION = "day"

_COUNTRY_CURRENCY = {
    "DE": "EUR", "FR": "EUR", "NL": "EUR", "BE": "EUR", "ES": "EUR", "IT": "EUR", "AT": "EUR",
    "PT": "EUR", "IE": "EUR", "FI": "EUR", "US": "USD", "GB": "GBP", "CH": "CHF", "SE": "SEK",
    "PL": "PLN", "CZ": "CZK", "JP": "JPY", "BR": "BRL", "CA": "CAD", "AU": "AUD",
}  # fmt: skip
_HOME_COUNTRY_WEIGHTS = {"DE": 0.35, "FR": 0.15, "NL": 0.1, "GB": 0.1, "ES": 0.08, "IT": 0.07}
_CATEGORY_WEIGHTS = {
    "grocery": 0.25, "restaurant": 0.15, "fuel": 0.08, "retail": 0.16, "electronics": 0.04,
    "travel": 0.03, "digital_goods": 0.06, "entertainment": 0.06, "health": 0.05,
    "utilities": 0.04, "jewelry": 0.01, "gambling": 0.01, "cash": 0.06,
}  # fmt: skip
_CATEGORY_AMOUNT_SHIFT = {
    "grocery": 0.0, "restaurant": -0.2, "fuel": 0.3, "retail": 0.3, "electronics": 1.4,
    "travel": 1.6, "digital_goods": -0.8, "entertainment": -0.1, "health": 0.2,
    "utilities": 0.9, "jewelry": 1.8, "gambling": 0.5, "cash": 0.8,
}  # fmt: skip
# Share of a day's traffic in each UTC hour: quiet nights, a lunch peak, an evening peak.
_HOURLY = np.array(
    [0.6, 0.35, 0.25, 0.2, 0.25, 0.5, 1.2, 2.4, 3.6, 4.2, 4.8, 5.6,
     6.6, 6.2, 5.4, 5.2, 5.6, 6.4, 7.2, 7.0, 6.0, 4.4, 2.8, 1.4],
)  # fmt: skip
_HOURLY = _HOURLY / _HOURLY.sum()
_WEEKDAY = np.array([0.95, 0.95, 1.0, 1.0, 1.1, 1.2, 0.85])  # Monday .. Sunday
_CHANNEL_BASE = np.array([0.35, 0.35, 0.22, 0.02, 0.06])  # pos, contactless, ecom, moto, atm

_CAT = {c: i for i, c in enumerate(MERCHANT_CATEGORIES)}
_CH = {c: i for i, c in enumerate(CHANNELS)}
_N_FAVOURITES = 8


@dataclass(frozen=True)
class SimulationConfig:
    days: int = 14
    cards: int = 10_000
    merchants: int = 1_000
    seed: int = 0
    start: dt.date = dt.date(2026, 1, 5)
    fraud_intensity: float = 1.0
    """Multiplies the rate of every fraud scenario (1.0 gives a fraud rate near 0.5 %)."""


@dataclass(frozen=True)
class World:
    """The card and merchant profiles that every day's traffic is drawn from."""

    card_home: np.ndarray  # country index
    card_mu: np.ndarray  # log-amount level
    card_sigma: np.ndarray
    card_rate: np.ndarray  # transactions per day
    card_channel: np.ndarray  # the card's usual channel
    merchant_category: np.ndarray
    merchant_country: np.ndarray
    merchant_p: np.ndarray  # popularity
    merchant_cdf: np.ndarray
    breach_start: np.ndarray  # per merchant, first breached day index (-1: never)
    breach_days: np.ndarray


def _weights(keys: tuple[str, ...], weights: dict[str, float], rest: float) -> np.ndarray:
    p = np.array([weights.get(k, rest) for k in keys], dtype=np.float64)
    return p / p.sum()


def make_world(config: SimulationConfig) -> World:
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xC0FFEE]))
    n_cards, n_merchants = config.cards, config.merchants
    home = rng.choice(len(COUNTRIES), n_cards, p=_weights(COUNTRIES, _HOME_COUNTRY_WEIGHTS, 0.01))
    popularity = rng.pareto(1.2, n_merchants) + 1.0
    merchant_p = popularity / popularity.sum()
    category = rng.choice(
        len(MERCHANT_CATEGORIES), n_merchants, p=_weights(MERCHANT_CATEGORIES, _CATEGORY_WEIGHTS, 0)
    )
    merchant_country = np.where(
        rng.random(n_merchants) < 0.8,
        rng.choice(len(COUNTRIES), n_merchants, p=_weights(COUNTRIES, _HOME_COUNTRY_WEIGHTS, 0.01)),
        rng.integers(0, len(COUNTRIES), n_merchants),
    )
    # Breaches hit mid-sized merchants (popularity between the median and the 95th percentile),
    # so the breached share of traffic stays similar at any number of merchants.
    low, high = np.quantile(merchant_p, [0.5, 0.95])
    candidates = np.flatnonzero((merchant_p >= low) & (merchant_p <= high))
    n_breached = min(len(candidates), max(2, n_merchants // 250))
    breach_start = np.full(n_merchants, -1, dtype=np.int64)
    breached = rng.choice(candidates, n_breached, replace=False)
    breach_start[breached] = rng.integers(0, max(1, config.days), n_breached)
    return World(
        card_home=home,
        card_mu=rng.normal(3.2, 0.45, n_cards),
        card_sigma=rng.uniform(0.5, 0.9, n_cards),
        card_rate=rng.gamma(2.0, 1.0, n_cards),
        card_channel=rng.choice(len(CHANNELS), n_cards, p=_CHANNEL_BASE),
        merchant_category=category,
        merchant_country=merchant_country,
        merchant_p=merchant_p,
        merchant_cdf=np.cumsum(merchant_p),
        breach_start=breach_start,
        breach_days=rng.integers(14, 35, n_merchants),
    )


@dataclass
class _Rows:
    """Columns of a day under construction, as integer codes and numbers."""

    card: np.ndarray
    merchant: np.ndarray
    ts: np.ndarray
    amount: np.ndarray
    channel: np.ndarray
    country: np.ndarray
    fraud: np.ndarray
    scenario: np.ndarray

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        return _Rows(*(np.concatenate([getattr(p, f) for p in parts]) for f in _ROW_FIELDS))


_ROW_FIELDS = ("card", "merchant", "ts", "amount", "channel", "country", "fraud", "scenario")


def _popular_merchant(world: World, u: np.ndarray) -> np.ndarray:
    """Merchants drawn by popularity from uniform numbers in [0, 1)."""
    index = np.searchsorted(world.merchant_cdf, u * world.merchant_cdf[-1], side="right")
    return np.minimum(index, len(world.merchant_cdf) - 1)


def _favourite_merchant(world: World, card: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """The card's favourite merchant number `slot`: a fixed draw by popularity, computed
    from a hash of (card, slot) so that no (cards x favourites) table is kept."""
    h = (card.astype(np.uint64) * np.uint64(_N_FAVOURITES) + slot.astype(np.uint64)) * np.uint64(
        0x9E3779B97F4A7C15
    )
    h ^= h >> np.uint64(29)
    return _popular_merchant(world, (h >> np.uint64(11)).astype(np.float64) / float(1 << 53))


def _legit(rng: np.random.Generator, world: World, day: int, day_us: int, weekday: int) -> _Rows:
    counts = rng.poisson(world.card_rate * _WEEKDAY[weekday])
    card = np.repeat(np.arange(len(counts)), counts)
    n = card.shape[0]
    seconds = rng.choice(24, n, p=_HOURLY) * 3600 + rng.random(n) * 3600
    ts = day_us + (seconds * MICROS_PER_SECOND).astype(np.int64)
    merchant = _favourite_merchant(world, card, rng.integers(0, _N_FAVOURITES, n))
    elsewhere = rng.random(n) >= 0.7
    merchant[elsewhere] = _popular_merchant(world, rng.random(int(elsewhere.sum())))
    category = world.merchant_category[merchant]
    shift = np.array([_CATEGORY_AMOUNT_SHIFT[c] for c in MERCHANT_CATEGORIES])[category]
    amount = np.exp(world.card_mu[card] + shift + world.card_sigma[card] * rng.normal(size=n))
    # Look-alikes that keep fraud from being trivially separable: app-store micro-payments
    # (like card testing) and occasional big-ticket purchases (like takeovers).
    micro = np.isin(category, [_CAT["digital_goods"], _CAT["entertainment"]]) & (
        rng.random(n) < 0.25
    )
    amount = np.where(micro, rng.choice([0.99, 1.0, 1.99, 2.99, 4.99], n), amount)
    amount = np.where(rng.random(n) < 0.01, amount * rng.uniform(3, 12, n), amount)
    channel = np.where(
        rng.random(n) < 0.6, world.card_channel[card], rng.choice(len(CHANNELS), n, p=_CHANNEL_BASE)
    )
    channel = np.where(category == _CAT["digital_goods"], _CH["ecom"], channel)
    channel = np.where(category == _CAT["cash"], _CH["atm"], channel)
    channel = np.where((category != _CAT["cash"]) & (channel == _CH["atm"]), _CH["pos"], channel)
    abroad = rng.random(n) < 0.03
    country = np.where(
        channel == _CH["ecom"], world.merchant_country[merchant], world.card_home[card]
    )
    country = np.where(abroad, rng.integers(0, len(COUNTRIES), n), country)
    # A breached merchant: part of its traffic during the breach is fraud, at higher amounts.
    start = world.breach_start[merchant]
    in_breach = (start >= 0) & (day >= start) & (day < start + world.breach_days[merchant])
    breach_fraud = in_breach & (rng.random(n) < 0.15)
    amount = np.where(breach_fraud, amount * rng.uniform(1.5, 4.0, n), amount)
    scenario = np.where(breach_fraud, SCENARIOS.index("compromised_merchant"), 0)
    return _Rows(card, merchant, ts, amount, channel, country, breach_fraud, scenario)


def _merchants_in(world: World, categories: tuple[str, ...]) -> np.ndarray:
    wanted = np.isin(world.merchant_category, [_CAT[c] for c in categories])
    found = np.flatnonzero(wanted)
    return found if found.size else np.arange(len(world.merchant_category))


def _fraud(
    rng: np.random.Generator, world: World, day_us: int, intensity: float, n_cards: int
) -> _Rows:
    parts: list[_Rows] = []

    def add(
        card: np.ndarray,
        merchant: np.ndarray,
        ts: np.ndarray,
        amount: np.ndarray,
        channel: int | np.ndarray,
        country: np.ndarray,
        scenario: str,
    ) -> None:
        n = card.shape[0]
        parts.append(
            _Rows(
                card,
                merchant,
                ts,
                amount,
                np.broadcast_to(channel, n).copy(),
                country,
                np.ones(n, dtype=bool),
                np.full(n, SCENARIOS.index(scenario)),
            )
        )

    def victims(rate: float) -> np.ndarray:
        return rng.choice(n_cards, rng.poisson(rate * intensity * n_cards))

    def start_times(n: int, hours: tuple[int, int] = (0, 24)) -> np.ndarray:
        seconds = rng.uniform(hours[0] * 3600, hours[1] * 3600 - 3 * 3600, n)
        return day_us + (seconds * MICROS_PER_SECOND).astype(np.int64)

    # card testing: 5-25 probes of 0.5-3.00 within minutes, then maybe one big purchase.
    cards = victims(0.0004)
    sizes = rng.integers(5, 26, cards.shape[0])
    card = np.repeat(cards, sizes)
    t0 = np.repeat(start_times(cards.shape[0]), sizes)
    testers = _merchants_in(world, ("digital_goods", "entertainment"))
    step = rng.uniform(5, 60, card.shape[0]) * MICROS_PER_SECOND
    # Position of each probe within its burst: 0, 1, ... per card.
    order = np.arange(card.shape[0]) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    ts = t0 + (order * step).astype(np.int64)
    merchant = np.repeat(rng.choice(testers, cards.shape[0]), sizes)
    amount = np.where(rng.random(card.shape[0]) < 0.3, 1.0, rng.uniform(0.5, 5.0, card.shape[0]))
    add(card, merchant, ts, amount, _CH["ecom"], world.merchant_country[merchant], "card_testing")
    cashout = cards[rng.random(cards.shape[0]) < 0.5]
    big = _merchants_in(world, ("electronics", "jewelry"))
    merchant = rng.choice(big, cashout.shape[0])
    add(
        cashout,
        merchant,
        start_times(cashout.shape[0]) + 2 * 3600 * MICROS_PER_SECOND,
        rng.uniform(150, 1500, cashout.shape[0]),
        _CH["ecom"],
        world.merchant_country[merchant],
        "card_testing",
    )
    # account takeover: 2-6 large online payments in a country new to the card.
    cards = victims(0.0003)
    sizes = rng.integers(2, 7, cards.shape[0])
    card = np.repeat(cards, sizes)
    t0 = np.repeat(start_times(cards.shape[0]), sizes)
    ts = t0 + rng.integers(0, 3 * 3600, card.shape[0]) * MICROS_PER_SECOND
    foreign = (world.card_home[cards] + rng.integers(1, len(COUNTRIES), cards.shape[0])) % len(
        COUNTRIES
    )
    merchant = rng.choice(_merchants_in(world, ("electronics", "travel", "jewelry")), card.shape[0])
    amount = np.exp(world.card_mu[card]) * rng.uniform(3, 12, card.shape[0])
    channel = np.where(rng.random(card.shape[0]) < 0.8, _CH["ecom"], _CH["moto"])
    add(card, merchant, ts, amount, channel, np.repeat(foreign, sizes), "account_takeover")
    # night-time large amounts: 1-2 payments between 00:00 and 05:00 UTC.
    cards = victims(0.0003)
    sizes = rng.integers(1, 3, cards.shape[0])
    card = np.repeat(cards, sizes)
    ts = np.repeat(start_times(cards.shape[0], (0, 8)), sizes)
    ts = ts + rng.integers(0, 1800, card.shape[0]) * MICROS_PER_SECOND
    merchant = rng.choice(_merchants_in(world, ("electronics", "jewelry", "cash")), card.shape[0])
    amount = np.exp(world.card_mu[card]) * rng.uniform(4, 15, card.shape[0])
    channel = np.where(
        world.merchant_category[merchant] == _CAT["cash"], _CH["atm"], _CH["contactless"]
    )
    add(card, merchant, ts, amount, channel, world.card_home[card], "night_large")
    return _Rows.concat(parts)


def _dictionary(indices: np.ndarray, values: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), values)


def _names(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")


def generate_day(config: SimulationConfig, world: World, day: int) -> pa.Table:
    """All transactions of day `day` (0-based), sorted by time, in LABELLED_SCHEMA + scenario."""
    date = config.start + dt.timedelta(days=day)
    day_us = to_micros(dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC))
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, day]))
    rows = _Rows.concat(
        [
            _legit(rng, world, day, day_us, date.weekday()),
            _fraud(rng, world, day_us, config.fraud_intensity, config.cards),
        ]
    )
    # Bursts started late in the day may spill past midnight; they belong to this day's file.
    rows.ts = np.minimum(rows.ts, day_us + DAY_US - 1)
    order = np.argsort(rows.ts)
    n = order.shape[0]
    merchant_names = _names("m", np.arange(config.merchants))
    country = rows.country[order]
    currency_of = np.array([CURRENCIES.index(_COUNTRY_CURRENCY[c]) for c in COUNTRIES])
    columns = {
        "transaction_id": _names("t", np.arange(n, dtype=np.int64) + (day + 1) * 10**9),
        # High-cardinality ids as plain strings: Parquet dictionary-encodes them slowly.
        "card_id": _names("c", rows.card[order]),
        "merchant_id": _dictionary(rows.merchant[order], merchant_names),
        "merchant_category": _dictionary(
            world.merchant_category[rows.merchant[order]], pa.array(MERCHANT_CATEGORIES)
        ),
        "amount": pa.array(np.round(np.clip(rows.amount[order], 0.01, 50_000.0), 2)),
        "currency": _dictionary(currency_of[country], pa.array(CURRENCIES)),
        "country": _dictionary(country, pa.array(COUNTRIES)),
        "channel": _dictionary(rows.channel[order], pa.array(CHANNELS)),
        "timestamp": pa.array(rows.ts[order], pa.timestamp("us", tz="UTC")),
        "is_fraud": pa.array(rows.fraud[order]),
        "scenario": _dictionary(rows.scenario[order], pa.array(SCENARIOS)),
    }
    return pa.table(columns)


def day_directory(root: Path, date: dt.date) -> Path:
    return root / f"{DAY_PARTITION}={date.isoformat()}"


def generate(
    config: SimulationConfig,
    out: str | os.PathLike[str],
    progress: Callable[[Iterator[int]], Iterator[int]] | None = None,
) -> dict[dt.date, int]:
    """Write each day as Parquet under out/day=YYYY-MM-DD/, returning rows per day.

    A day's file is written beside its final place and renamed into it, so a reader (or a
    crash) never sees half a day; a re-run replaces days, it never appends to them.
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    world = make_world(config)
    counts: dict[dt.date, int] = {}
    days: Iterator[int] = iter(range(config.days))
    for day in progress(days) if progress else days:
        date = config.start + dt.timedelta(days=day)
        table = generate_day(config, world, day)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{date.isoformat()}."))
        pq.write_table(table, staging / "part-00000.parquet", row_group_size=1_000_000)
        final = day_directory(root, date)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        counts[date] = table.num_rows
    return counts


def check_schema(table: pa.Table) -> None:
    """Generated tables keep the contract's columns and types (the dictionary encoding aside)."""
    for field in LABELLED_SCHEMA:
        column_type = table.schema.field(field.name).type
        value_type = column_type.value_type if pa.types.is_dictionary(column_type) else column_type
        if value_type != field.type:
            raise TypeError(f"{field.name}: generated {value_type}, contract says {field.type}")
