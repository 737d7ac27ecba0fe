"""Train LightGBM on the contract's features and return a validated ONNX bundle.

The asset graph calls `train_bundle`; tests call it to make real models. Its heavy imports
(lightgbm, onnxmltools, scikit-learn) stay in this package, out of what serving and
streaming install.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import onnx
import onnxmltools
from onnxmltools.convert.common.data_types import FloatTensorType

from fraud_core.bundle import ModelBundle
from fraud_core.features import N_FEATURES, DataContract
from fraud_training.evaluation import ALERT_RATE, make_model_bundle

ONNX_OPSET = 15
"""The newest opset onnxmltools' LightGBM converter supports."""


@dataclass(frozen=True)
class LightGBMParams:
    """Hyper-parameters. The defaults resist overfitting a few thousand fraud examples."""

    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 200
    subsample: float = 0.8
    subsample_freq: int = 1
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    max_bin: int = 4095
    """Histogram bins per feature: LightGBM's default 255 lumps every large amount into one bin
    and misses "amount above X" patterns."""
    scale_pos_weight: float = 1.0
    """Weight of the fraud class (above 1 counts each fraud example more)."""
    seed: int = 7
    n_jobs: int = 0
    """Threads; 0 lets LightGBM use every core."""


@dataclass(frozen=True)
class TrainedModel:
    bundle: ModelBundle
    booster: lgb.Booster
    metrics: dict[str, float]


def fit_lightgbm(
    train_x: np.ndarray,
    train_y: np.ndarray,
    params: LightGBMParams | None = None,
    *,
    early_stopping: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> lgb.LGBMClassifier:
    """LightGBM on float32 features; with `early_stopping` (x, y, rounds), trees stop being
    added once the average precision on (x, y) has not improved for `rounds` trees, and the
    model keeps the best iteration."""
    p = params or LightGBMParams()
    if train_x.ndim != 2 or train_x.shape[1] != N_FEATURES:
        raise ValueError(f"expected (n, {N_FEATURES}) features, got {train_x.shape}")
    model = lgb.LGBMClassifier(
        objective="binary",
        n_estimators=p.n_estimators,
        learning_rate=p.learning_rate,
        num_leaves=p.num_leaves,
        min_child_samples=p.min_child_samples,
        subsample=p.subsample,
        subsample_freq=p.subsample_freq,
        colsample_bytree=p.colsample_bytree,
        reg_lambda=p.reg_lambda,
        max_bin=p.max_bin,
        scale_pos_weight=p.scale_pos_weight,
        random_state=p.seed,
        n_jobs=p.n_jobs,
        deterministic=True,
        force_col_wise=True,
        verbose=-1,
    )
    x = np.asarray(train_x, dtype=np.float32)
    y = np.asarray(train_y, dtype=np.int8)
    if early_stopping is None:
        model.fit(x, y)
        return model
    stop_x, stop_y, rounds = early_stopping
    model.fit(
        x, y,
        eval_X=(np.asarray(stop_x, dtype=np.float32),),
        eval_y=(np.asarray(stop_y, dtype=np.int8),),
        eval_metric="average_precision",
        callbacks=[lgb.early_stopping(rounds, first_metric_only=True, verbose=False)],
    )  # fmt: skip
    return model


def export_lightgbm(model: lgb.LGBMClassifier | lgb.Booster) -> onnx.ModelProto:
    """The ONNX graph of a fitted LightGBM classifier (float32 thresholds, as ONNX has)."""
    return onnxmltools.convert_lightgbm(
        model,
        initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
        zipmap=False,
        target_opset=ONNX_OPSET,
    )


def lightgbm_importance(model: lgb.LGBMClassifier | lgb.Booster) -> np.ndarray:
    """Each feature's share of the total split gain."""
    booster = model.booster_ if isinstance(model, lgb.LGBMClassifier) else model
    gain = booster.feature_importance(importance_type="gain").astype(np.float64)
    return gain / max(gain.sum(), 1e-12)


def train_bundle(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    *,
    contract: DataContract,
    name: str = "fraud-lightgbm",
    version: str = "1",
    params: LightGBMParams | None = None,
    alert_rate: float = ALERT_RATE,
) -> TrainedModel:
    """Fit LightGBM on the training rows, export it, and bundle it with threshold and metrics
    and the data contract its features were computed with."""
    model = fit_lightgbm(train_x, train_y, params)
    bundle, metrics = make_model_bundle(
        export_lightgbm(model),
        train_x,
        valid_x,
        valid_y,
        name=name,
        version=version,
        family="lightgbm",
        contract=contract,
        importance=lightgbm_importance(model),
        alert_rate=alert_rate,
    )
    return TrainedModel(bundle, model.booster_, metrics)
