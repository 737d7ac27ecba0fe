"""Feature definitions against hand-computed cases: window edges, first rows, label delay."""

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest

from fraud_core.features import (
    CARD_WINDOWS,
    DAY_US,
    DEFAULT_LABEL_DELAY_US,
    FEATURE_NAMES,
    HOUR_US,
    N_FEATURES,
    STATEFUL_FEATURES,
    STATELESS_FEATURES,
    DataContract,
    WindowSpec,
    category_codes,
    feature_matrix,
    stateless_features,
)
from fraud_core.schema import LABELLED_SCHEMA, to_micros
from fraud_core.state import (
    CardEvent,
    CardState,
    MerchantState,
    add_card_event,
    add_label,
    card_features,
    card_features_reference,
    card_step,
    compile_card_features,
    decode_card_state,
    decode_merchant_state,
    encode_state,
    end_states,
    merchant_features,
    merchant_features_reference,
    read_merchant_state,
    replay,
)
from fraud_data.simulator import CHANNELS, COUNTRIES, CURRENCIES, MERCHANT_CATEGORIES
from tests.conftest import model_columns, utc

pytestmark = pytest.mark.unit

CONTRACT = DataContract(
    vocabularies={
        "merchant_category": MERCHANT_CATEGORIES,
        "channel": CHANNELS,
        "currency": CURRENCIES,
        "country": COUNTRIES,
    }
)
"""The simulated world's values, in their listed order."""

T0 = to_micros(utc(2026, 1, 5, 12))  # a Monday, noon UTC
SECOND = 1_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR


def card(values: list[float]) -> dict[str, float]:
    return dict(zip((s.name for s in CARD_WINDOWS), values, strict=True))


def run_card(events: list[CardEvent]) -> list[dict[str, float]]:
    state = CardState()
    out = []
    for event in events:
        values, state = card_step(state, event)
        out.append(card(values))
    return out


def test_names_are_unique_and_ordered_stateless_first() -> None:
    assert len(set(FEATURE_NAMES)) == N_FEATURES
    assert FEATURE_NAMES == STATELESS_FEATURES + STATEFUL_FEATURES


def test_stateless_features_by_hand() -> None:
    saturday_3am = to_micros(utc(2026, 1, 10, 3, 30))
    columns = {
        "amount": [0.0, 99.0],
        "timestamp_us": [T0, saturday_3am],
        "merchant_category": ["grocery", "never-seen"],
        "channel": ["ecom", "pos"],
        "currency": ["EUR", "XXX"],
        "country": ["DE", "GB"],
    }
    got = dict(zip(STATELESS_FEATURES, stateless_features(columns, CONTRACT).T, strict=True))
    np.testing.assert_allclose(got["log_amount"], [0.0, math.log(100.0)], rtol=1e-6)
    assert got["hour_of_day"].tolist() == [12, 3]
    assert got["day_of_week"].tolist() == [0, 5]
    assert got["is_weekend"].tolist() == [0, 1]
    assert got["is_night"].tolist() == [0, 1]
    assert got["is_round_amount"].tolist() == [1, 1]
    assert got["merchant_category_code"].tolist() == [1, 0]  # unknown -> 0
    assert got["channel_code"].tolist() == [3, 1]
    assert got["currency_code"].tolist() == [1, 0]
    assert got["country_code"].tolist() == [1, 12]


def test_category_codes_accept_numpy_arrow_and_lists() -> None:
    vocab = ("a", "b")
    for values in (["b", "z"], np.array(["b", "z"]), pa.array(["b", "z"])):
        assert category_codes(values, vocab).tolist() == [2.0, 0.0]


def test_first_transaction_of_a_card_gets_the_defaults() -> None:
    (first,) = run_card([CardEvent(T0, 10.0, "m1", "DE")])
    assert first == {spec.name: spec.default for spec in CARD_WINDOWS}
    assert first["card_seconds_since_prev"] == -1.0


def test_card_windows_by_hand() -> None:
    got = run_card(
        [
            CardEvent(T0 - 2 * DAY, 40.0, "m1", "DE"),
            CardEvent(T0 - 2 * HOUR, 10.0, "m2", "DE"),
            CardEvent(T0 - 30 * 60 * SECOND, 20.0, "m2", "DE"),
            CardEvent(T0, 90.0, "m3", "FR"),
        ]
    )[-1]
    assert got["card_txn_count_1h"] == 1
    assert got["card_amount_sum_1h"] == 20.0
    assert got["card_txn_count_24h"] == 2
    assert got["card_amount_mean_24h"] == 15.0
    assert got["card_txn_count_7d"] == 3
    assert got["card_amount_sum_7d"] == 70.0
    assert got["card_seconds_since_prev"] == 1800.0
    assert got["card_amount_to_mean_7d"] == pytest.approx(90.0 / (70.0 / 3))
    assert got["card_distinct_merchants_24h"] == 1
    assert got["card_new_country_7d"] == 1.0


def test_window_edges_include_exactly_w_before_and_exclude_one_microsecond_more() -> None:
    inside = run_card([CardEvent(T0 - HOUR, 5.0, "m", "DE"), CardEvent(T0, 1.0, "m", "DE")])
    outside = run_card([CardEvent(T0 - HOUR - 1, 5.0, "m", "DE"), CardEvent(T0, 1.0, "m", "DE")])
    assert inside[-1]["card_txn_count_1h"] == 1
    assert outside[-1]["card_txn_count_1h"] == 0
    assert outside[-1]["card_txn_count_24h"] == 1


def test_transactions_at_the_same_instant_do_not_see_each_other() -> None:
    a, b = run_card([CardEvent(T0, 5.0, "m", "DE"), CardEvent(T0, 7.0, "m", "DE")])
    assert a["card_txn_count_1h"] == b["card_txn_count_1h"] == 0


@pytest.mark.parametrize("seed", range(4))
def test_the_generated_card_features_equal_the_reference_on_random_histories(seed: int) -> None:
    """`card_features` is generated from the specs; `card_features_reference` is the
    specification. On random card histories (bursts at one instant, gaps longer than every
    window, transactions exactly a window apart, late ones), every value is the same float."""
    rng = np.random.default_rng(seed)
    windows = sorted({spec.window_us for spec in CARD_WINDOWS})
    state, checked = CardState(), 0
    ts = T0
    for _ in range(3_000):
        step = rng.choice(["same", "exact", "short", "long", "late"], p=[0.1, 0.1, 0.6, 0.1, 0.1])
        ts += {
            "same": 0,
            "exact": int(rng.choice(windows)),
            "short": int(rng.integers(1, 6 * HOUR_US)),
            "long": int(rng.integers(DAY_US, 40 * DAY_US)),
            "late": -int(rng.integers(0, 2 * DAY_US)),
        }[str(step)]
        amount = float(rng.choice([0.0, float(rng.lognormal(3, 1.5))], p=[0.05, 0.95]))
        event = CardEvent(ts, amount, f"m{rng.integers(8)}", str(rng.choice(["DE", "FR", "US"])))
        fast, reference = card_features(state, event), card_features_reference(state, event)
        assert fast == reference, (event, state)
        assert [type(v) for v in fast] == [float] * len(CARD_WINDOWS)
        checked += bool(state.ts)
        add_card_event(state, event)
    assert checked > 2_900  # not a history of empty states


@pytest.mark.parametrize("seed", range(3))
def test_merchant_features_equal_the_one_window_at_a_time_reference(seed: int) -> None:
    """Labels at random hours (bursts, gaps past every window), asked at random times,
    among them exactly a window after a labelled hour: the same values as the reference."""
    rng = np.random.default_rng(seed)
    state, hour, longest = MerchantState(), T0 // HOUR_US, 0
    for _ in range(2_000):
        hour += int(
            rng.choice(
                [0, 1, 2, 24, 24 * 7, 24 * 30, 24 * 31],
                p=[0.3, 0.5, 0.17, 0.025, 0.003, 0.001, 0.001],
            )
        )
        add_label(state, hour * HOUR_US + int(rng.integers(HOUR_US)), bool(rng.random() < 0.2))
        for ask in (hour, hour + 1, hour + 24, hour + 24 * 7, hour + 24 * 30, hour + 24 * 31):
            ts = ask * HOUR_US + int(rng.integers(HOUR_US))
            assert merchant_features(state, ts) == merchant_features_reference(state, ts)
        longest = max(longest, len(state.hours))
    assert longest > 100  # histories long enough to fill the longest window


def test_a_shared_merchant_state_is_the_one_its_current_encoding_holds() -> None:
    """Readers share a decoded merchant state while its encoding is the same (a copy of the
    bytes, as each Redis read returns, finds it too); a label changes the encoding, and the
    next read decodes the new state."""
    state = MerchantState()
    add_label(state, T0, True)
    first = read_merchant_state(encode_state(state))
    assert read_merchant_state(bytes(bytearray(encode_state(state)))) is first
    add_label(state, T0 + HOUR, False)
    assert read_merchant_state(encode_state(state)) == state != first
    assert read_merchant_state(None) == MerchantState()


def test_card_features_are_generated_from_any_specs_and_refuse_an_unknown_aggregate() -> None:
    specs = [
        WindowSpec(f"x_{aggregate}_{w}", "card", aggregate, w, default)
        for aggregate in ("count", "amount_sum", "amount_mean", "seconds_since_prev",
                          "amount_to_mean", "distinct_merchants", "new_country")
        for w, default in ((90 * 60_000_000, -2.5), (2 * DAY_US, 0.0))
    ]  # fmt: skip
    state = CardState()
    for i in range(30):
        add_card_event(state, CardEvent(T0 + i * HOUR_US, float(i % 7), f"m{i % 3}", "DE"))
    event = CardEvent(T0 + 30 * HOUR_US, 4.0, "m9", "FR")
    values = compile_card_features(specs)(state, event)
    assert len(values) == len(specs)
    assert values[:2] == [1.0, 30.0]  # count: 90 min holds one earlier transaction, 2 days all
    with pytest.raises(ValueError, match="'median' is not a card aggregate"):
        compile_card_features([WindowSpec("x", "card", "median", DAY_US, 0.0)])


def test_card_state_keeps_only_what_the_longest_window_needs() -> None:
    state = CardState()
    for i in range(40):
        _, state = card_step(state, CardEvent(T0 + i * DAY, 1.0, "m", "DE"))
    assert len(state.ts) == 31  # the newest, plus the thirty days before it
    assert decode_card_state(encode_state(state)) == state


def test_merchant_risk_counts_labels_only_from_the_hour_after_they_are_known() -> None:
    state = MerchantState()
    label_time = T0 + 10 * 60 * SECOND  # 12:10
    add_label(state, label_time, True)
    add_label(state, label_time, False)
    names = ("rate_1d", "rate_7d", "rate_30d", "count_30d")
    same_hour = dict(zip(names, merchant_features(state, T0 + 50 * 60 * SECOND), strict=True))
    next_hour = dict(zip(names, merchant_features(state, T0 + HOUR), strict=True))
    after_a_day = dict(zip(names, merchant_features(state, T0 + DAY + HOUR), strict=True))
    assert same_hour == {"rate_1d": -1.0, "rate_7d": -1.0, "rate_30d": -1.0, "count_30d": 0.0}
    assert next_hour == {"rate_1d": 0.5, "rate_7d": 0.5, "rate_30d": 0.5, "count_30d": 2.0}
    assert after_a_day["rate_1d"] == -1.0
    assert after_a_day["rate_7d"] == 0.5
    assert decode_merchant_state(encode_state(state)) == state


def history_table(rows: list[tuple[str, str, dt.datetime, float, bool | None]]) -> pa.Table:
    """(card, merchant, time, amount, is_fraud) -> a labelled history table."""
    n = len(rows)
    return pa.table(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "card_id": [r[0] for r in rows],
            "merchant_id": [r[1] for r in rows],
            "merchant_category": ["retail"] * n,
            "amount": [r[3] for r in rows],
            "currency": ["EUR"] * n,
            "country": ["DE"] * n,
            "channel": ["pos"] * n,
            "timestamp": [r[2] for r in rows],
            "is_fraud": [r[4] for r in rows],
        },
        schema=LABELLED_SCHEMA,
    )


def test_replay_applies_the_label_delay() -> None:
    fraud_time = utc(2026, 1, 5, 12)
    delay = dt.timedelta(microseconds=DEFAULT_LABEL_DELAY_US)
    table = history_table(
        [
            ("c1", "m1", fraud_time, 100.0, True),
            ("c2", "m1", fraud_time + delay - dt.timedelta(minutes=1), 10.0, False),
            ("c3", "m1", fraud_time + delay + dt.timedelta(hours=1), 10.0, False),
        ]
    )
    rate = replay(table)["merchant_fraud_rate_7d"]
    # Before the delay the fraud is unknown; an hour after it, it is the merchant's only label.
    assert rate.tolist() == [-1.0, -1.0, 1.0]


@pytest.mark.parametrize("days", [1, 7])
def test_a_label_counts_from_the_hour_after_its_delay_and_not_before(days: int) -> None:
    """At the edges: a transaction in the hour its label becomes known does not see it; one in
    the next hour does. The delay is the contract's, not a constant."""
    fraud_time = utc(2026, 1, 5, 12)
    delay = dt.timedelta(days=days)
    known = fraud_time + delay
    table = history_table([
        ("c1", "m1", fraud_time, 100.0, True),
        ("c2", "m1", known - dt.timedelta(microseconds=1), 10.0, False),
        ("c3", "m1", known + dt.timedelta(minutes=59), 10.0, False),
        ("c4", "m1", known + dt.timedelta(hours=1), 10.0, False),
    ])  # fmt: skip
    rate = replay(table, label_delay_us=days * DAY)["merchant_fraud_rate_7d"]
    assert rate.tolist() == [-1.0, -1.0, -1.0, 1.0]


def test_a_label_time_column_overrides_the_delay_and_null_labels_are_no_labels() -> None:
    base = utc(2026, 1, 5, 12)
    table = history_table([
        ("c1", "m1", base, 100.0, True),  # its label arrives after an hour, per label_time
        ("c2", "m1", base + dt.timedelta(hours=1), 10.0, None),  # unlabelled
        ("c3", "m1", base + dt.timedelta(hours=2, minutes=1), 10.0, False),
        ("c4", "m1", base + dt.timedelta(hours=4), 10.0, False),
    ])  # fmt: skip
    label_time = pa.array(
        [base + dt.timedelta(hours=1), None, None, None], pa.timestamp("us", tz="UTC")
    )
    with_times = table.append_column("label_time", label_time)
    got = replay(with_times, label_delay_us=DEFAULT_LABEL_DELAY_US)
    # c1's label (known at 13:00) counts from 14:00; the null label of c2 never counts.
    assert got["merchant_label_count_30d"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert got["merchant_fraud_rate_7d"].tolist() == [-1.0, -1.0, 1.0, 1.0]
    cards, merchants = end_states(with_times)
    assert sum(merchants["m1"].labelled) == 3  # c1, c3 and c4: c2 has no label
    assert sum(len(c.ts) for c in cards.values()) == 4  # an unlabelled row is a transaction


def test_no_leakage_future_rows_do_not_change_past_features() -> None:
    base = utc(2026, 1, 5, 9)
    rows = [("c1", "m1", base + dt.timedelta(hours=h), 10.0 + h, h == 3) for h in range(8)]
    full = feature_matrix(model_columns(history_table(rows)), CONTRACT)
    for cut in range(1, len(rows)):
        prefix = feature_matrix(model_columns(history_table(rows[:cut])), CONTRACT)
        np.testing.assert_array_equal(prefix, full[:cut])
    # And changing a later row's amount or label leaves earlier features untouched.
    altered = [*rows[:5], *[(c, m, t, 9999.0, True) for c, m, t, _, _ in rows[5:]]]
    np.testing.assert_array_equal(
        feature_matrix(model_columns(history_table(altered)), CONTRACT)[:5], full[:5]
    )


def test_replay_continues_from_given_states() -> None:
    base = utc(2026, 1, 5, 9)
    rows = [("c1", "m1", base + dt.timedelta(minutes=10 * i), 5.0, False) for i in range(6)]
    whole = replay(history_table(rows))
    cards: dict[str, CardState] = {}
    merchants: dict[str, MerchantState] = {}
    first = replay(history_table(rows[:3]), cards, merchants)
    second = replay(history_table(rows[3:]), cards, merchants)
    for name in STATEFUL_FEATURES:
        assert [*first[name], *second[name]] == whole[name].tolist()


def test_end_states_are_the_states_replay_leaves_and_stop_at_the_cut(history: pa.Table) -> None:
    cards: dict[str, CardState] = {}
    merchants: dict[str, MerchantState] = {}
    replay(history, cards, merchants)
    end_cards, end_merchants = end_states(history)
    assert end_cards == cards
    assert end_merchants == {m: s for m, s in merchants.items() if s.hours}
    ts = np.asarray(history.column("timestamp").cast(pa.int64()))
    cut = int(ts[len(ts) // 2])
    before_cards, before_merchants = end_states(history, cut)
    assert max(max(s.ts) for s in before_cards.values()) < cut
    assert max(s.hours[-1] for s in before_merchants.values()) <= cut // HOUR
    assert sum(len(s.ts) for s in before_cards.values()) < sum(len(s.ts) for s in cards.values())
