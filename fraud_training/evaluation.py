"""How a model is judged and bundled: PR-AUC, ROC-AUC, recall at the alert budget, and the
threshold that alerts on that budget, all measured on the exported ONNX graph."""

from __future__ import annotations

import datetime as dt

import msgspec
import numpy as np
import numpy.typing as npt
import onnx
from sklearn.metrics import average_precision_score, roc_auc_score

from fraud_core.bundle import BundleMetadata, ModelBundle, make_bundle
from fraud_core.features import FEATURE_NAMES, FEATURE_VERSION, DataContract
from fraud_core.inference import Scorer

ALERT_RATE = 0.005
"""Share of transactions the fraud team can review: the threshold is set to alert on this many."""


def evaluate(
    scores: npt.ArrayLike, labels: npt.ArrayLike, alert_rate: float = ALERT_RATE
) -> dict[str, float]:
    """PR-AUC, ROC-AUC, and the share of fraud caught when alerting on the top `alert_rate`."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int8)
    if y.min() == y.max():
        raise ValueError("evaluation needs both fraud and legitimate examples")
    n_alerts = max(1, round(alert_rate * len(scores)))
    top = np.argsort(-scores, kind="stable")[:n_alerts]
    return {
        "pr_auc": float(average_precision_score(y, scores)),
        "roc_auc": float(roc_auc_score(y, scores)),
        "recall_at_alert_rate": float(y[top].sum() / y.sum()),
        "alert_rate": alert_rate,
        "n_examples": float(len(y)),
        "n_fraud": float(y.sum()),
    }


def threshold_for_alert_rate(scores: np.ndarray, alert_rate: float = ALERT_RATE) -> float:
    """The score at or above which `alert_rate` of these transactions would alert."""
    return float(np.quantile(scores.astype(np.float64), 1.0 - alert_rate))


def make_model_bundle(
    onnx_model: onnx.ModelProto,
    train_x: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    *,
    name: str,
    version: str,
    family: str,
    contract: DataContract,
    importance: np.ndarray | None = None,
    alert_rate: float = ALERT_RATE,
) -> tuple[ModelBundle, dict[str, float]]:
    """Bundle an exported model: threshold and metrics are measured on the ONNX graph itself,
    the thing that is served, on the validation rows."""
    x_train = np.asarray(train_x, dtype=np.float32)
    draft = BundleMetadata(
        name=name,
        version=version,
        feature_version=FEATURE_VERSION,
        feature_names=FEATURE_NAMES,
        threshold=0.5,
        feature_means=tuple(x_train.mean(axis=0, dtype=np.float64).tolist()),
        feature_scales=tuple(x_train.std(axis=0, dtype=np.float64).tolist()),
        feature_importance=tuple(importance.tolist()) if importance is not None else (),
        trained_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        family=family,
        contract=contract,
    )
    valid_scores = Scorer(make_bundle(onnx_model, draft)).score(
        np.asarray(valid_x, dtype=np.float32)
    )
    metrics = evaluate(valid_scores, valid_y, alert_rate)
    metadata = msgspec.structs.replace(
        draft, threshold=threshold_for_alert_rate(valid_scores, alert_rate), metrics=metrics
    )
    return make_bundle(onnx_model, metadata), metrics
