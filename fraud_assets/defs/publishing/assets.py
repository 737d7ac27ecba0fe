"""published_model: the champion, registered in MLflow and pointed to in the local store."""

from pathlib import Path

import dagster as dg

from fraud_assets.defs.resources import MlflowResource, StorageResource
from fraud_assets.defs.training.assets import onnx_model, quantized_onnx_model
from fraud_assets.lib.candidates import (
    CHALLENGER,
    LIGHTGBM,
    judge_challenger,
    load_candidate,
    load_training_set,
)
from fraud_assets.lib.drift import save_baseline, score_baseline
from fraud_assets.lib.registry import register_champion
from fraud_core.inference import Scorer
from fraud_training.evaluation import evaluate


def baseline_path(storage: StorageResource, version: str) -> Path:
    return storage.table("published") / version / "score_baseline.json"


@dg.asset(deps=[onnx_model, quantized_onnx_model], group_name="publishing", kinds={"mlflow"})
def published_model(
    context: dg.AssetExecutionContext, storage: StorageResource, mlflow_tracking: MlflowResource
) -> dg.MaterializeResult:
    """The champion by validation PR-AUC, registered as alias "champion" and in the model store."""
    data = load_training_set(storage)
    candidates = [load_candidate(storage, LIGHTGBM)]
    challenger = load_candidate(storage, CHALLENGER)
    verdict = judge_challenger(challenger, data)
    if verdict.passed:
        candidates.append(challenger)
    else:
        context.log.warning(f"int8 challenger not eligible: {verdict}")
    pr_auc = {
        c.kind: evaluate(Scorer(c.bundle).score(data.valid_x), data.valid_y)["pr_auc"]
        for c in candidates
    }
    # On a tie the first candidate (LightGBM, the simpler to audit) stays champion.
    champion = max(candidates, key=lambda c: pr_auc[c.kind])
    bundle = champion.bundle
    path = storage.model_store.add(bundle)
    registered = register_champion(
        mlflow_tracking.client(),
        mlflow_tracking.registered_model,
        champion.run_id,
        path,
        bundle.metadata.version,
    )
    save_baseline(
        baseline_path(storage, bundle.metadata.version),
        score_baseline(Scorer(bundle).score(data.train_x)),
    )
    storage.model_store.point_to(bundle.metadata.version)
    context.log.info(f"published {bundle.label} as registry version {registered.registry_version}")
    return dg.MaterializeResult(
        metadata={
            "bundle_version": bundle.metadata.version,
            "family": bundle.metadata.family,
            "registry_version": registered.registry_version,
            "threshold": bundle.metadata.threshold,
            "candidates_pr_auc": pr_auc,
            "challenger_eligible": verdict.passed,
            "model_store": dg.MetadataValue.path(str(path)),
        }
    )
