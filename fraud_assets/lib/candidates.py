"""Files the training assets hand to each other: the training set and candidate bundles."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec
import numpy as np
import pyarrow.parquet as pq

from fraud_core.bundle import ModelBundle, read_bundle, write_bundle
from fraud_core.features import FEATURE_NAMES, DataContract
from fraud_core.inference import Scorer
from fraud_training.evaluation import evaluate

LIGHTGBM = "lightgbm"
CHALLENGER = "mlp-int8"


class Tables(Protocol):
    """Where the warehouse's tables live (the storage resource is one)."""

    def table(self, name: str) -> Path: ...


MAX_QUANTIZED_PR_AUC_LOSS = 0.01
"""The int8 challenger may lose at most 1 % of its fp32 PR-AUC (relative)."""


def training_set_paths(storage: Tables) -> dict[str, Path]:
    root = storage.table("training_set")
    return {
        "train": root / "train.parquet",
        "valid": root / "valid.parquet",
        "contract": root / "contract.json",
    }


@dataclass(frozen=True)
class TrainingSet:
    train_x: np.ndarray
    train_y: np.ndarray
    train_days: np.ndarray
    valid_x: np.ndarray
    valid_y: np.ndarray
    newest_day: str
    contract: DataContract
    """Learnt on the training days; every candidate bundle carries it."""


def _split(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    x = np.column_stack([table.column(n).to_numpy() for n in FEATURE_NAMES]).astype(np.float32)
    y = table.column("is_fraud").to_numpy(zero_copy_only=False).astype(np.int8)
    return x, y, np.asarray(table.column("day").to_pylist())


def load_training_set(storage: Tables) -> TrainingSet:
    paths = training_set_paths(storage)
    train_x, train_y, train_days = _split(paths["train"])
    valid_x, valid_y, days = _split(paths["valid"])
    contract = msgspec.json.decode(paths["contract"].read_bytes(), type=DataContract)
    return TrainingSet(train_x, train_y, train_days, valid_x, valid_y, str(max(days)), contract)


@dataclass(frozen=True)
class Candidate:
    """A bundle that may be published, with the MLflow run it came from."""

    kind: str
    bundle: ModelBundle
    run_id: str
    reference: ModelBundle | None = None
    """For the int8 challenger: its fp32 original, the baseline of its quality budget."""


def _folder(storage: Tables, kind: str) -> Path:
    return storage.table("candidates") / kind


def save_candidate(storage: Tables, candidate: Candidate) -> Path:
    folder = _folder(storage, candidate.kind)
    path = write_bundle(candidate.bundle, folder / "model.onnx")
    if candidate.reference is not None:
        write_bundle(candidate.reference, folder / "reference.onnx")
    (folder / "run.json").write_text(json.dumps({"run_id": candidate.run_id}))
    return path


def load_candidate(storage: Tables, kind: str) -> Candidate:
    folder = _folder(storage, kind)
    reference = folder / "reference.onnx"
    return Candidate(
        kind,
        read_bundle(folder / "model.onnx"),
        json.loads((folder / "run.json").read_text())["run_id"],
        read_bundle(reference) if reference.exists() else None,
    )


@dataclass(frozen=True)
class ChallengerVerdict:
    pr_auc_int8: float
    pr_auc_fp32: float
    relative_loss: float
    max_batch_difference: float

    @property
    def passed(self) -> bool:
        return self.relative_loss <= MAX_QUANTIZED_PR_AUC_LOSS and self.max_batch_difference == 0.0


def judge_challenger(candidate: Candidate, data: TrainingSet, rows: int = 512) -> ChallengerVerdict:
    """Quality loss against fp32, and whether a row's score depends on its batch."""
    assert candidate.reference is not None
    scorer = Scorer(candidate.bundle)
    int8 = evaluate(scorer.score(data.valid_x), data.valid_y)["pr_auc"]
    fp32 = evaluate(Scorer(candidate.reference).score(data.valid_x), data.valid_y)["pr_auc"]
    sample = data.valid_x[:rows]
    batched = scorer.score(sample)
    alone = np.concatenate([scorer.score(sample[i : i + 1]) for i in range(len(sample))])
    return ChallengerVerdict(
        pr_auc_int8=int8,
        pr_auc_fp32=fp32,
        relative_loss=max(0.0, (fp32 - int8) / fp32) if fp32 > 0 else 1.0,
        max_batch_difference=float(np.max(np.abs(batched - alone))),
    )
