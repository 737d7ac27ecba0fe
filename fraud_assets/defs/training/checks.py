"""Quality gates on the models. Blocking checks stop a bad model before publishing."""

import time

import dagster as dg
import numpy as np

from fraud_assets.defs.resources import PolicyResource, StorageResource
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
from fraud_core.inference import Scorer
from fraud_training.evaluation import evaluate

MAX_ONNX_DIFFERENCE = 1e-4


@dg.asset_check(asset=fraud_model, blocking=True)
def fraud_model_quality(storage: StorageResource, policy: PolicyResource) -> dg.AssetCheckResult:
    """PR-AUC above the floor, and not worse than the current champion beyond the tolerance."""
    data = load_training_set(storage)
    booster, _ = native_model(storage)
    pr_auc = evaluate(booster.predict(data.valid_x), data.valid_y)["pr_auc"]
    metadata: dict[str, float | str] = {"pr_auc": pr_auc, "floor": policy.min_pr_auc}
    passed = pr_auc >= policy.min_pr_auc
    try:
        champion = Scorer(storage.model_store.load_champion())
    except BundleError:
        champion = None  # none yet, or one for other features: the floor alone decides
    if champion is not None:
        champion_pr_auc = evaluate(champion.score(data.valid_x), data.valid_y)["pr_auc"]
        metadata |= {"champion_version": champion.version, "champion_pr_auc": champion_pr_auc}
        passed = passed and pr_auc >= champion_pr_auc * (1 - policy.champion_tolerance)
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
def onnx_single_row_latency(
    storage: StorageResource, policy: PolicyResource
) -> dg.AssetCheckResult:
    """Single-row scoring stays within the latency budget (p99)."""
    data = load_training_set(storage)
    scorer = Scorer(load_candidate(storage, LIGHTGBM).bundle)
    timings = single_row_latencies_ms(scorer, data.valid_x)
    p50, p99 = np.percentile(timings, [50, 99])
    return dg.AssetCheckResult(
        passed=bool(p99 <= policy.latency_p99_ms),
        metadata={
            "p50_ms": float(p50),
            "p99_ms": float(p99),
            "budget_p99_ms": policy.latency_p99_ms,
        },
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
