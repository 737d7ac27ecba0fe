"""Quality gates on the models. Blocking checks stop a bad model before publishing."""

import os
import time

import dagster as dg
import numpy as np

from fraud_assets.defs.resources import StorageResource
from fraud_assets.defs.training.assets import (
    fraud_model,
    native_model,
    onnx_model,
    quantized_onnx_model,
)
from fraud_assets.lib.candidates import (
    CHALLENGER,
    LIGHTGBM,
    MAX_QUANTIZED_PR_AUC_LOSS,
    judge_challenger,
    load_candidate,
    load_training_set,
)
from fraud_core.bundle import BundleError
from fraud_core.scorer import Scorer
from fraud_core.training import evaluate

MIN_PR_AUC = float(os.environ.get("FRAUD_ASSETS_MIN_PR_AUC", "0.3"))
"""A model below this PR-AUC on the validation days is never published."""
CHAMPION_TOLERANCE = float(os.environ.get("FRAUD_ASSETS_CHAMPION_TOLERANCE", "0.05"))
"""A new model may be at most this much (relative PR-AUC) worse than the champion."""
MAX_ONNX_DIFFERENCE = 1e-4
LATENCY_P99_MS = float(os.environ.get("FRAUD_ASSETS_LATENCY_P99_MS", "5"))
"""Single-row scoring budget for the exported model (99th percentile, milliseconds)."""


@dg.asset_check(asset=fraud_model, blocking=True)
def fraud_model_quality(storage: StorageResource) -> dg.AssetCheckResult:
    """PR-AUC above the floor, and not worse than the current champion beyond the tolerance."""
    data = load_training_set(storage)
    booster, _ = native_model(storage)
    pr_auc = evaluate(booster.predict(data.valid_x), data.valid_y)["pr_auc"]
    metadata: dict[str, float | str] = {"pr_auc": pr_auc, "floor": MIN_PR_AUC}
    passed = pr_auc >= MIN_PR_AUC
    try:
        champion = Scorer(storage.model_store.load_champion())
    except BundleError:
        champion = None  # none yet, or one for other features: the floor alone decides
    if champion is not None:
        champion_pr_auc = evaluate(champion.score(data.valid_x), data.valid_y)["pr_auc"]
        metadata |= {"champion_version": champion.version, "champion_pr_auc": champion_pr_auc}
        passed = passed and pr_auc >= champion_pr_auc * (1 - CHAMPION_TOLERANCE)
    return dg.AssetCheckResult(passed=passed, metadata=metadata)


@dg.asset_check(asset=onnx_model, blocking=True)
def onnx_matches_native(storage: StorageResource) -> dg.AssetCheckResult:
    """The exported ONNX graph scores the validation days like native LightGBM (<= 1e-4)."""
    data = load_training_set(storage)
    booster, _ = native_model(storage)
    onnx_scores = Scorer(load_candidate(storage, LIGHTGBM).bundle).score(data.valid_x)
    difference = float(np.max(np.abs(onnx_scores - booster.predict(data.valid_x))))
    return dg.AssetCheckResult(
        passed=difference <= MAX_ONNX_DIFFERENCE,
        metadata={"max_abs_difference": difference, "limit": MAX_ONNX_DIFFERENCE},
    )


def single_row_latencies_ms(scorer: Scorer, rows: np.ndarray, repeats: int = 2000) -> np.ndarray:
    timings = np.empty(repeats)
    for i in range(repeats):
        row = rows[i % len(rows)][None, :]
        start = time.perf_counter()
        scorer.score(row)
        timings[i] = (time.perf_counter() - start) * 1000
    return timings


@dg.asset_check(asset=onnx_model, blocking=True)
def onnx_single_row_latency(storage: StorageResource) -> dg.AssetCheckResult:
    """Single-row scoring stays within the latency budget (p99)."""
    data = load_training_set(storage)
    scorer = Scorer(load_candidate(storage, LIGHTGBM).bundle)
    timings = single_row_latencies_ms(scorer, data.valid_x)
    p50, p99 = np.percentile(timings, [50, 99])
    return dg.AssetCheckResult(
        passed=bool(p99 <= LATENCY_P99_MS),
        metadata={"p50_ms": float(p50), "p99_ms": float(p99), "budget_p99_ms": LATENCY_P99_MS},
    )


@dg.asset_check(asset=quantized_onnx_model)
def int8_quality_and_determinism(storage: StorageResource) -> dg.AssetCheckResult:
    """int8 PR-AUC within 1 % of fp32, and every row scores the same alone or in a batch.

    Not blocking: a failed challenger must not stop the LightGBM champion. Publishing applies
    the same verdict and never picks a challenger that fails it.
    """
    verdict = judge_challenger(load_candidate(storage, CHALLENGER), load_training_set(storage))
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "pr_auc_int8": verdict.pr_auc_int8,
            "pr_auc_fp32": verdict.pr_auc_fp32,
            "relative_loss": verdict.relative_loss,
            "allowed_loss": MAX_QUANTIZED_PR_AUC_LOSS,
            "max_batch_difference": verdict.max_batch_difference,
        },
    )
