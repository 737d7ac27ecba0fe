"""training_set -> fraud_model -> onnx_model, and the int8 challenger quantized_onnx_model."""

import datetime as dt
import json

import dagster as dg
import lightgbm as lgb
import mlflow
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraud_assets.defs.resources import FeaturesResource, MlflowResource, StorageResource
from fraud_assets.lib.candidates import (
    CHALLENGER,
    LIGHTGBM,
    Candidate,
    TrainingSet,
    load_training_set,
    save_candidate,
    training_set_paths,
)
from fraud_assets.lib.registry import experiment_id
from fraud_assets.lib.warehouse import read_days, write_file
from fraud_core.features import (
    FEATURE_NAMES,
    DataContract,
    arrow_columns,
    feature_matrix,
)
from fraud_core.inference import Scorer
from fraud_training.encoding import learn_contract
from fraud_training.evaluation import evaluate, make_model_bundle
from fraud_training.lightgbm_trainer import (
    LightGBMParams,
    export_lightgbm,
    lightgbm_importance,
)
from fraud_training.mlp_challenger import export_mlp, fit_mlp, quantize_int8
from fraud_training.splits import labelled_days
from fraud_training.tuning import Trial, Tuning, fit_tuned

DEFAULT_PARAMS = LightGBMParams()


class TrainingSetConfig(dg.Config):
    validation_days: int = 3
    """The newest labelled days, held out to measure models and set thresholds."""
    warmup_days: int = 7
    """Days skipped at the start of the data, whose week-long card windows still lack history
    (the month-long ones fill up over the training days, as a new card's do in service)."""
    max_training_days: int = 56
    """At most this many days before the validation days are trained on."""


def _matrix_table(table: pa.Table, contract: DataContract) -> pa.Table:
    x = feature_matrix(arrow_columns(table), contract)
    day = pc.strftime(table.column("timestamp"), format="%Y-%m-%d")
    columns = {
        "transaction_id": table.column("transaction_id"),
        "day": day,
        "is_fraud": table.column("is_fraud"),
        **{name: pa.array(x[:, i]) for i, name in enumerate(FEATURE_NAMES)},
    }
    return pa.table(columns)


@dg.asset(deps=["card_features"], group_name="training", kinds={"parquet"})
def training_set(
    context: dg.AssetExecutionContext,
    config: TrainingSetConfig,
    storage: StorageResource,
    features: FeaturesResource,
) -> dg.MaterializeResult:
    """Model inputs split by time: older labelled days to train, the newest ones to validate."""
    root = storage.table("card_features")
    available = sorted(
        dt.date.fromisoformat(p.name.split("=", 1)[1]) for p in root.glob("day=*") if p.is_dir()
    )
    usable = labelled_days(available, features.label_delay_us)[config.warmup_days :]
    if len(usable) <= config.validation_days:
        raise dg.Failure(
            description=f"{len(usable)} labelled days after warm-up; need more than "
            f"{config.validation_days} (available: {len(available)} days)"
        )
    valid_days = usable[-config.validation_days :]
    train_days = usable[: -config.validation_days][-config.max_training_days :]
    paths = training_set_paths(storage)
    tables = {
        split: read_days(root, days).filter(pc.is_valid(pc.field("is_fraud")))
        for split, days in (("train", train_days), ("valid", valid_days))
    }
    contract = learn_contract(tables["train"], features.label_delay_us, features.vocabulary_size)
    summary = {}
    for split, days in (("train", train_days), ("valid", valid_days)):
        table = tables[split]
        fraud = int(pc.sum(table.column("is_fraud")).as_py() or 0)
        if fraud == 0:
            raise dg.Failure(description=f"the {split} days {days[0]}..{days[-1]} have no fraud")
        write_file(_matrix_table(table, contract), paths[split])
        summary[split] = {
            "rows": table.num_rows,
            "fraud": fraud,
            "first": days[0],
            "last": days[-1],
        }
    paths["contract"].write_bytes(msgspec.json.encode(contract))
    context.log.info(f"training set: {summary}")
    return dg.MaterializeResult(
        metadata={
            "train_rows": summary["train"]["rows"],
            "train_fraud": summary["train"]["fraud"],
            "valid_rows": summary["valid"]["rows"],
            "valid_fraud": summary["valid"]["fraud"],
            "train_days": f"{train_days[0]} .. {train_days[-1]}",
            "valid_days": f"{valid_days[0]} .. {valid_days[-1]}",
            "newest_day": valid_days[-1].isoformat(),
            "label_delay_days": features.label_delay_days,
            "vocabulary_sizes": {k: len(v) for k, v in contract.vocabularies.items()},
        }
    )


class FraudModelConfig(dg.Config):
    """LightGBM hyper-parameters (defaults resist overfitting a few thousand fraud rows)."""

    n_estimators: int = DEFAULT_PARAMS.n_estimators
    learning_rate: float = DEFAULT_PARAMS.learning_rate
    num_leaves: int = DEFAULT_PARAMS.num_leaves
    min_child_samples: int = DEFAULT_PARAMS.min_child_samples
    subsample: float = DEFAULT_PARAMS.subsample
    colsample_bytree: float = DEFAULT_PARAMS.colsample_bytree
    reg_lambda: float = DEFAULT_PARAMS.reg_lambda
    max_bin: int = DEFAULT_PARAMS.max_bin
    scale_pos_weight: float = DEFAULT_PARAMS.scale_pos_weight
    seed: int = DEFAULT_PARAMS.seed
    """Seeds LightGBM and the search: the same seed and trials give the same model."""
    tuning_trials: int = 15
    """Hyper-parameter search trials (0: train with the parameters above as they are)."""
    tuning_timeout_seconds: float = 300.0
    """The search starts no trial after this long."""
    tuning_days: int = 2
    """The newest training days, which score the search's trials (each trial fits on the
    older ones, with early stopping on these)."""

    def params(self) -> LightGBMParams:
        fields = LightGBMParams.__dataclass_fields__
        return LightGBMParams(**{k: v for k, v in self.model_dump().items() if k in fields})

    def tuning(self) -> Tuning | None:
        if self.tuning_trials <= 0:
            return None
        return Tuning(
            trials=self.tuning_trials, timeout_seconds=self.tuning_timeout_seconds, seed=self.seed
        )


@dg.asset(deps=[training_set], group_name="training", kinds={"lightgbm", "mlflow"})
def fraud_model(
    context: dg.AssetExecutionContext,
    config: FraudModelConfig,
    storage: StorageResource,
    mlflow_tracking: MlflowResource,
) -> dg.MaterializeResult:
    """LightGBM on the training days after a parameter search; an MLflow run (trials nested)."""
    data = load_training_set(storage)
    client = mlflow_tracking.client()
    with mlflow.start_run(experiment_id=experiment_id(client, mlflow_tracking.experiment)) as run:

        def log_trial(trial: Trial) -> None:
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
                mlflow.log_params({**trial.params, "trees": trial.trees})
                mlflow.log_metric("tuning_average_precision", trial.average_precision)

        try:
            model, params, search = fit_tuned(
                data.train_x, data.train_y, data.train_days, params=config.params(),
                tuning=config.tuning(), tuning_days=config.tuning_days, on_trial=log_trial,
            )  # fmt: skip
        except ValueError as exc:
            raise dg.Failure(description=f"cannot tune: {exc}") from None
        metrics = evaluate(model.booster_.predict(data.valid_x), data.valid_y)
        chosen = {k: getattr(params, k) for k in LightGBMParams.__dataclass_fields__}
        mlflow.log_params({**chosen, "train_rows": len(data.train_y)})
        if search is not None:
            mlflow.log_metric("tuning_trials", len(search.trials))
            mlflow.log_metric("tuning_best_average_precision", search.best_trial.average_precision)
        mlflow.log_metrics({f"native_{k}": v for k, v in metrics.items()})
        mlflow.set_tags({"fraudscale.newest_day": data.newest_day})
        folder = storage.table("models") / LIGHTGBM
        folder.mkdir(parents=True, exist_ok=True)
        model.booster_.save_model(str(folder / "model.txt"))
        (folder / "run.json").write_text(json.dumps({"run_id": run.info.run_id}))
        mlflow.log_artifact(str(folder / "model.txt"), artifact_path="lightgbm")
    context.log.info(f"trained LightGBM in MLflow run {run.info.run_id}: {metrics}")
    return dg.MaterializeResult(
        metadata={
            "mlflow_run_id": run.info.run_id,
            "pr_auc": metrics["pr_auc"],
            "roc_auc": metrics["roc_auc"],
            "recall_at_0.5pct_alerts": metrics["recall_at_alert_rate"],
            "params": chosen,
            "tuning_trials": len(search.trials) if search else 0,
        }
    )


def native_model(storage: StorageResource) -> tuple[lgb.Booster, str]:
    folder = storage.table("models") / LIGHTGBM
    run_id = json.loads((folder / "run.json").read_text())["run_id"]
    return lgb.Booster(model_file=str(folder / "model.txt")), run_id


def bundle_version(data: TrainingSet, run_id: str) -> str:
    return f"{data.newest_day.replace('-', '')}-{run_id[:8]}"


@dg.asset(deps=[fraud_model], group_name="training", kinds={"onnx"})
def onnx_model(
    context: dg.AssetExecutionContext, storage: StorageResource, mlflow_tracking: MlflowResource
) -> dg.MaterializeResult:
    """The LightGBM model exported to ONNX with its fraud_core bundle metadata."""
    data = load_training_set(storage)
    booster, run_id = native_model(storage)
    bundle, metrics = make_model_bundle(
        export_lightgbm(booster),
        data.train_x,
        data.valid_x,
        data.valid_y,
        name="fraud-lightgbm",
        version=bundle_version(data, run_id),
        family="lightgbm",
        contract=data.contract,
        importance=lightgbm_importance(booster),
    )
    path = save_candidate(storage, Candidate(LIGHTGBM, bundle, run_id))
    client = mlflow_tracking.client()
    client.log_artifact(run_id, str(path), artifact_path="onnx")
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    return dg.MaterializeResult(
        metadata={
            "bundle_version": bundle.metadata.version,
            "threshold": bundle.metadata.threshold,
            "pr_auc": metrics["pr_auc"],
            "recall_at_0.5pct_alerts": metrics["recall_at_alert_rate"],
            "bytes": len(bundle.onnx_bytes),
        }
    )


class ChallengerConfig(dg.Config):
    max_iter: int = 60
    """Training epochs at most (early stopping usually ends sooner)."""
    calibration_rows: int = 5000
    """Training rows used to calibrate the int8 activation ranges."""
    seed: int = 0


@dg.asset(deps=[training_set, fraud_model], group_name="training", kinds={"onnx", "sklearn"})
def quantized_onnx_model(
    context: dg.AssetExecutionContext,
    config: ChallengerConfig,
    storage: StorageResource,
    mlflow_tracking: MlflowResource,
) -> dg.MaterializeResult:
    """An MLP challenger quantized to int8 statically (QDQ, calibrated on training rows)."""
    data = load_training_set(storage)
    _, run_id = native_model(storage)
    mlp = fit_mlp(data.train_x, data.train_y, seed=config.seed, max_iter=config.max_iter)
    fp32 = export_mlp(mlp)
    rng = np.random.default_rng(config.seed)
    rows = rng.choice(
        len(data.train_x), min(config.calibration_rows, len(data.train_x)), replace=False
    )
    int8 = quantize_int8(fp32, data.train_x[np.sort(rows)])
    version = bundle_version(data, run_id) + "-int8"
    fp32_bundle, fp32_metrics = make_model_bundle(
        fp32, data.train_x, data.valid_x, data.valid_y,
        name="fraud-mlp-fp32", version=version + "-fp32", family="mlp-fp32",
        contract=data.contract,
    )  # fmt: skip
    bundle, metrics = make_model_bundle(
        int8, data.train_x, data.valid_x, data.valid_y,
        name="fraud-mlp-int8", version=version, family="mlp-int8",
        contract=data.contract,
    )  # fmt: skip
    save_candidate(storage, Candidate(CHALLENGER, bundle, run_id, reference=fp32_bundle))
    client = mlflow_tracking.client()
    for key, value in metrics.items():
        client.log_metric(run_id, f"int8_{key}", value)
    client.log_metric(run_id, "int8_fp32_pr_auc", fp32_metrics["pr_auc"])
    context.log.info(f"int8 PR-AUC {metrics['pr_auc']:.4f} vs fp32 {fp32_metrics['pr_auc']:.4f}")
    scorer = Scorer(bundle)
    return dg.MaterializeResult(
        metadata={
            "bundle_version": version,
            "pr_auc_int8": metrics["pr_auc"],
            "pr_auc_fp32": fp32_metrics["pr_auc"],
            "bytes_int8": len(bundle.onnx_bytes),
            "bytes_fp32": len(fp32_bundle.onnx_bytes),
            "threshold": scorer.threshold,
        }
    )
