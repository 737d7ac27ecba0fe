"""The backtest: its metrics against hand-computed cases, and a run on simulated data whose
time split respects the label delay."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from fraud_core.features import DAY_US
from fraud_data.landing import read_landing
from fraud_training.backtest import (
    BacktestConfig,
    backtest,
    card_precision_at_k,
    plot,
    recall_at_rate,
)
from fraud_training.lightgbm_trainer import LightGBMParams

pytestmark = pytest.mark.unit


def test_card_precision_removes_cards_found_on_earlier_days() -> None:
    days = np.array(["d1"] * 4 + ["d2"] * 4)
    cards = np.array(["a", "b", "c", "c", "a", "b", "d", "c"])
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.99, 0.7, 0.6, 0.1])
    labels = np.array([1, 0, 0, 0, 1, 0, 1, 0])
    # day 1, k=2: a (0.9, fraud), b (0.8): 1/2; a is found.
    # day 2: a is out; b (0.7), d (0.6, fraud): 1/2.
    assert card_precision_at_k(days, cards, scores, labels, k=2) == [0.5, 0.5]
    # A card's score is its best transaction's: c's 0.2 beats nothing else on day 1 at k=3.
    assert card_precision_at_k(days[:4], cards[:4], scores[:4], labels[:4], k=3) == [1 / 3]


def test_recall_at_the_alert_budget() -> None:
    scores = np.arange(200, dtype=float)  # the top 1 % is the 2 highest
    labels = np.zeros(200, dtype=int)
    labels[[199, 150, 10]] = 1
    assert recall_at_rate(scores, labels, 0.01) == pytest.approx(1 / 3)


def test_a_backtest_trains_only_on_labels_known_before_the_test_days(
    landing: Path, tmp_path: Path
) -> None:
    history = read_landing(landing, extra=["scenario"])
    delay = 2 * DAY_US
    config = BacktestConfig(
        train_days=5, test_days=3, label_delay_us=delay,
        params=LightGBMParams(n_estimators=40, min_child_samples=50), top_k=20,
    )  # fmt: skip
    result = backtest(history, config)
    first_test = result.days[0].day
    assert [d.day for d in result.days] == [first_test + dt.timedelta(days=i) for i in range(3)]
    assert result.train_last == first_test - dt.timedelta(days=3)  # 2 days of labels missing
    assert (result.train_last - result.train_first).days == 4
    assert 0.5 < result.roc_auc <= 1.0
    assert 0.0 < result.average_precision <= 1.0
    assert 0.0 <= result.card_precision_at_k <= 1.0
    assert set(result.recall_by_segment) == {"scenario"}  # the simulator's extra column
    assert "legit" not in result.recall_by_segment["scenario"]
    png = plot(result, tmp_path / "backtest.png")
    assert png.stat().st_size > 10_000
