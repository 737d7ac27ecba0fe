"""Evaluate fraudscale on your own data before deploying it: the project's own features and
trainer on a time split that respects the label delay.

    fraudscale backtest DATA_DIR --train-days 56 --label-delay 7 --test-days 14

The test days are the newest `test_days`. Training uses the `train_days` before them whose
labels were all known when the test period began (the label delay leaves a gap), and features
of every row come from the reference implementation over the whole history, each seeing only
labels known before its hour. The model is the training asset's: vocabularies learnt on the
training days, LightGBM fitted by `fraud_training.tuning.fit_tuned`.

Reported per test day: ROC AUC, average precision, card precision@k (the k cards with the
highest score that day, cards detected on earlier days removed, as an investigation team
works); over the test period: the same, recall at the alert budget, and recall by segment for
any extra column the data carries (a scenario, a channel).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.metrics import average_precision_score, roc_auc_score

from fraud_core.features import arrow_columns, feature_matrix
from fraud_core.schema import TRANSACTION_COLUMNS, split_valid
from fraud_core.state import LABEL_TIME_COLUMN, label_times_us, replay
from fraud_training.encoding import DEFAULT_VOCABULARY_SIZE, learn_contract
from fraud_training.evaluation import ALERT_RATE
from fraud_training.lightgbm_trainer import LightGBMParams
from fraud_training.splits import days_before_known
from fraud_training.tuning import Tuning, fit_tuned


@dataclass(frozen=True)
class BacktestConfig:
    train_days: int
    test_days: int
    label_delay_us: int
    """Labels without their own time are known this long after their transaction."""
    params: LightGBMParams = field(default_factory=LightGBMParams)
    tuning: Tuning | None = None
    alert_rate: float = ALERT_RATE
    top_k: int = 100
    vocabulary_size: int = DEFAULT_VOCABULARY_SIZE


@dataclass(frozen=True)
class DayResult:
    day: dt.date
    transactions: int
    frauds: int
    roc_auc: float
    average_precision: float
    card_precision_at_k: float


@dataclass(frozen=True)
class Backtest:
    config: BacktestConfig
    train_first: dt.date
    train_last: dt.date
    train_rows: int
    train_frauds: int
    days: list[DayResult]
    roc_auc: float
    average_precision: float
    card_precision_at_k: float
    """Mean over the test days."""
    recall_at_alert_rate: float
    recall_by_segment: dict[str, dict[str, tuple[int, float]]]
    """column -> value -> (frauds, recall at the alert budget)."""
    params: LightGBMParams


def card_precision_at_k(
    days: np.ndarray, cards: np.ndarray, scores: np.ndarray, labels: np.ndarray, k: int
) -> list[float]:
    """Per day (in order), the share of fraud among the k cards with the highest score that
    day (a card's score is its highest transaction's). Cards found on earlier days (true
    alerts) are out of later days' rankings: they are blocked and investigated already."""
    detected: set[str] = set()
    out = []
    for day in np.unique(days):
        on_day = days == day
        best: dict[str, tuple[float, bool]] = {}
        for card, score, label in zip(cards[on_day], scores[on_day], labels[on_day], strict=True):
            if card in detected:
                continue
            top, fraud = best.get(card, (-np.inf, False))
            best[card] = (max(top, float(score)), fraud or bool(label))
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:k]
        found = [card for card, (_, fraud) in ranked if fraud]
        detected.update(found)
        out.append(len(found) / k)
    return out


def recall_at_rate(scores: np.ndarray, labels: np.ndarray, rate: float) -> float:
    """The share of fraud among the top `rate` of scores."""
    alerts = top_share(scores, rate)
    total = labels.sum()
    return float(labels[alerts].sum() / total) if total else float("nan")


def top_share(scores: np.ndarray, rate: float) -> np.ndarray:
    """A mask of the `rate` highest scores (at least one)."""
    n = max(1, round(rate * len(scores)))
    mask = np.zeros(len(scores), dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:n]] = True
    return mask


def _safe(metric: str, labels: np.ndarray, scores: np.ndarray) -> float:
    if labels.min() == labels.max():
        return float("nan")
    return float((roc_auc_score if metric == "roc" else average_precision_score)(labels, scores))


def backtest(table: pa.Table, config: BacktestConfig) -> Backtest:
    """Train and test on a time split of `table` (labelled transactions, any extra columns)."""
    valid, _ = split_valid(table)
    data = valid.filter(pc.is_valid(valid.column("is_fraud"))).sort_by("timestamp")
    day_of = np.asarray(
        pc.cast(pc.floor_temporal(data.column("timestamp"), unit="day"), pa.date32())
    )
    days = sorted(set(day_of.tolist()))
    if len(days) < config.test_days + 2:
        raise ValueError(f"{len(days)} days of data: too few for {config.test_days} test days")
    test_days = days[-config.test_days :]
    train_window = days_before_known(test_days[0], config.train_days, config.label_delay_us)
    test_start_us = int(dt.datetime.combine(test_days[0], dt.time(), dt.UTC).timestamp() * 1e6)
    known = label_times_us(data, config.label_delay_us) < test_start_us
    train = np.isin(day_of, np.asarray(train_window, dtype="datetime64[D]")) & known
    test = np.isin(day_of, np.asarray(test_days, dtype="datetime64[D]"))
    if not train.any():
        raise ValueError(f"no training rows with labels known before {test_days[0]}")

    stateful = replay(data, label_delay_us=config.label_delay_us)
    contract = learn_contract(
        data.filter(pa.array(train)), config.label_delay_us, config.vocabulary_size
    )
    x = feature_matrix({**arrow_columns(data), **stateful}, contract)
    y = np.asarray(data.column("is_fraud")).astype(np.int8)
    model, params, _ = fit_tuned(
        x[train], y[train], day_of[train], params=config.params, tuning=config.tuning
    )
    scores = np.asarray(model.predict_proba(x[test]))[:, 1].astype(np.float32)
    test_y, test_days_of = y[test], day_of[test]
    cards = np.asarray(data.column("card_id").to_pylist(), dtype=object)[test]
    precision = card_precision_at_k(test_days_of, cards, scores, test_y, config.top_k)
    per_day = []
    for day, card_precision in zip(np.unique(test_days_of), precision, strict=True):
        on = test_days_of == day
        per_day.append(DayResult(
            day=day.astype(dt.date), transactions=int(on.sum()), frauds=int(test_y[on].sum()),
            roc_auc=_safe("roc", test_y[on], scores[on]),
            average_precision=_safe("ap", test_y[on], scores[on]),
            card_precision_at_k=card_precision,
        ))  # fmt: skip
    alerts = top_share(scores, config.alert_rate)
    segments: dict[str, dict[str, tuple[int, float]]] = {}
    extra = [c for c in data.column_names if c not in (*TRANSACTION_COLUMNS, "is_fraud",
                                                      LABEL_TIME_COLUMN, "day")]  # fmt: skip
    for column in extra:
        values = np.asarray(data.column(column).cast(pa.string()).to_pylist(), dtype=object)[test]
        by_value = {}
        for value in sorted({v for v in values[test_y == 1] if v is not None}):
            fraud = (values == value) & (test_y == 1)
            by_value[str(value)] = (int(fraud.sum()), float(alerts[fraud].mean()))
        if by_value:
            segments[column] = by_value
    train_days_of = day_of[train]
    return Backtest(
        config=config,
        train_first=train_days_of.min().astype(dt.date),
        train_last=train_days_of.max().astype(dt.date),
        train_rows=int(train.sum()),
        train_frauds=int(y[train].sum()),
        days=per_day,
        roc_auc=_safe("roc", test_y, scores),
        average_precision=_safe("ap", test_y, scores),
        card_precision_at_k=float(np.mean(precision)),
        recall_at_alert_rate=recall_at_rate(scores, test_y, config.alert_rate),
        recall_by_segment=segments,
        params=params,
    )


def plot(result: Backtest, path: Path) -> Path:
    """Average precision and card precision@k by test day, as a PNG."""
    import matplotlib
    import matplotlib.dates

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4))
    days = matplotlib.dates.date2num([d.day for d in result.days])
    axis.plot(days, [d.average_precision for d in result.days], marker="o",
              label="average precision")  # fmt: skip
    axis.plot(days, [d.card_precision_at_k for d in result.days], marker="s",
              label=f"card precision@{result.config.top_k}")  # fmt: skip
    axis.set_ylim(0, 1)
    axis.set_title(
        f"backtest: trained {result.train_first}..{result.train_last}, "
        f"label delay {result.config.label_delay_us / 86_400e6:g} d"
    )
    axis.legend()
    axis.grid(alpha=0.3)
    axis.xaxis_date()
    axis.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%Y-%m-%d"))
    figure.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
