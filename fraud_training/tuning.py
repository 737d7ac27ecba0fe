"""A time-bounded hyper-parameter search for LightGBM (Optuna's TPE sampler).

Each trial trains on the older training days with early stopping on the newest ones (the
tuning days) and is scored by average precision there; the best trial's parameters, with its
best number of trees, are what the champion is trained with. The same seed and number of trials
give the same trials, in order (LightGBM runs deterministically); the time budget only stops
the search early.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
from sklearn.metrics import average_precision_score

from fraud_training.lightgbm_trainer import LightGBMParams, fit_lightgbm

EARLY_STOPPING_ROUNDS = 30


@dataclass(frozen=True)
class Tuning:
    trials: int = 20
    """Trials at most."""
    timeout_seconds: float = 600.0
    """The search stops starting trials after this long (0: no limit)."""
    max_trees: int = 600
    """Trees per trial at most (early stopping usually ends sooner)."""
    seed: int = 7


@dataclass(frozen=True)
class Trial:
    number: int
    params: dict[str, Any]
    average_precision: float
    trees: int


@dataclass(frozen=True)
class TuningResult:
    best: LightGBMParams
    """The best trial's parameters, with its number of trees."""
    trials: list[Trial]

    @property
    def best_trial(self) -> Trial:
        return max(self.trials, key=lambda t: (t.average_precision, -t.number))


def _suggest(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "num_leaves": trial.suggest_int("num_leaves", 15, 127, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 20, 600, log=True),
        "max_bin": trial.suggest_categorical("max_bin", [1023, 4095]),
        "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, 30.0, log=True),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def tune_lightgbm(
    train_x: np.ndarray,
    train_y: np.ndarray,
    tune_x: np.ndarray,
    tune_y: np.ndarray,
    tuning: Tuning,
    *,
    base: LightGBMParams | None = None,
    on_trial: Callable[[Trial], None] | None = None,
) -> TuningResult:
    """Search LightGBM's parameters on (train, tune); `on_trial` sees every finished trial
    (the training asset logs each to MLflow)."""
    start = dataclasses.replace(base or LightGBMParams(), n_estimators=tuning.max_trees)
    trials: list[Trial] = []

    def objective(trial: optuna.Trial) -> float:
        params = _suggest(trial)
        model = fit_lightgbm(
            train_x, train_y, dataclasses.replace(start, **params),
            early_stopping=(tune_x, tune_y, EARLY_STOPPING_ROUNDS),
        )  # fmt: skip
        trees = int(model.best_iteration_ or tuning.max_trees)
        scores = np.asarray(
            model.predict_proba(np.asarray(tune_x, dtype=np.float32), num_iteration=trees)
        )
        ap = float(average_precision_score(tune_y, scores[:, 1]))
        done = Trial(trial.number, params, ap, trees)
        trials.append(done)
        if on_trial is not None:
            on_trial(done)
        return ap

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=tuning.seed)
    )
    study.optimize(
        objective, n_trials=tuning.trials, timeout=tuning.timeout_seconds or None, n_jobs=1
    )
    result = TuningResult(start, trials)
    best = result.best_trial
    return dataclasses.replace(
        result, best=dataclasses.replace(start, **best.params, n_estimators=best.trees)
    )


def fit_tuned(
    train_x: np.ndarray,
    train_y: np.ndarray,
    train_days: np.ndarray,
    *,
    params: LightGBMParams,
    tuning: Tuning | None,
    tuning_days: int = 2,
    on_trial: Callable[[Trial], None] | None = None,
) -> tuple[lgb.LGBMClassifier, LightGBMParams, TuningResult | None]:
    """The champion's fit, shared by the training asset and the backtest: with `tuning`, the
    newest `tuning_days` of the training days tune the parameters (fit on the older ones),
    then the model is trained on every training day with the best; without, `params` as
    they are. Returns the model, the parameters used and the search."""
    if tuning is None or tuning.trials <= 0:
        return fit_lightgbm(train_x, train_y, params), params, None
    days = np.asarray(train_days)
    cut = np.sort(np.unique(days))[-tuning_days] if len(np.unique(days)) > tuning_days else None
    if cut is None:
        raise ValueError(f"tuning needs more than {tuning_days} training days")
    fit, tune = days < cut, days >= cut
    if train_y[tune].sum() == 0 or train_y[fit].sum() == 0:
        raise ValueError("the tuning days or the days before them have no fraud to learn from")
    result = tune_lightgbm(
        train_x[fit], train_y[fit], train_x[tune], train_y[tune], tuning,
        base=params, on_trial=on_trial,
    )  # fmt: skip
    return fit_lightgbm(train_x, train_y, result.best), result.best, result
