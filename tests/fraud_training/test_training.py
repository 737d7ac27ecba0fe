"""The data contract a model learns, its round trip through the bundle, tuning by seed."""

from __future__ import annotations

import dataclasses

import msgspec
import numpy as np
import onnx
import pyarrow as pa
import pytest

from fraud_core.bundle import BundleError, make_bundle, read_bundle, validate_bundle
from fraud_core.features import (
    CATEGORICAL_COLUMNS,
    DAY_US,
    DEFAULT_LABEL_DELAY_US,
    STATELESS_FEATURES,
    stateless_features,
    unknown_share,
)
from fraud_core.inference import Scorer
from fraud_core.schema import to_micros
from fraud_training.encoding import learn_contract
from fraud_training.tuning import Tuning, tune_lightgbm
from tests.conftest import utc

pytestmark = pytest.mark.unit


def transactions(**columns: list[str]) -> pa.Table:
    n = len(next(iter(columns.values())))
    base = {c: ["x"] * n for c in CATEGORICAL_COLUMNS}
    return pa.table({**base, **columns})


def test_vocabularies_rank_values_by_frequency_capped_ties_by_value() -> None:
    table = transactions(channel=["ecom", "pos", "pos", "atm", "moto", "ecom", "pos", "atm"])
    contract = learn_contract(table, DEFAULT_LABEL_DELAY_US, size=3)
    assert contract.vocabularies["channel"] == ("pos", "atm", "ecom")  # moto: the 4th, cut
    assert contract.label_delay_us == DEFAULT_LABEL_DELAY_US
    assert unknown_share(pa.array(["pos", "moto", "zzz", "atm"]), ("pos", "atm")) == 0.5


def test_unseen_values_encode_as_unknown_and_known_ones_by_rank() -> None:
    contract = learn_contract(
        transactions(country=["BR", "BR", "DE"], channel=["ecom"] * 3), DEFAULT_LABEL_DELAY_US
    )
    columns = {
        "amount": [1.0, 1.0, 1.0],
        "timestamp_us": [to_micros(utc(2026, 1, 5))] * 3,
        "merchant_category": ["x"] * 3, "currency": ["x"] * 3, "channel": ["ecom"] * 3,
        "country": ["BR", "DE", "FR"],
    }  # fmt: skip
    x = stateless_features(columns, contract)
    codes = x[:, STATELESS_FEATURES.index("country_code")]
    assert codes.tolist() == [1.0, 2.0, 0.0]  # FR was never seen: unknown


def test_the_contract_round_trips_through_the_bundle(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "model.onnx"
    path.write_bytes(trained.bundle.onnx_bytes)
    read = read_bundle(path)
    assert read.metadata.contract == trained.bundle.metadata.contract
    assert Scorer(read).contract.vocabularies["country"]  # learnt, not empty


def test_a_bundle_trained_with_another_label_delay_is_refused_by_name(trained) -> None:  # type: ignore[no-untyped-def]
    validate_bundle(trained.bundle, label_delay_us=DEFAULT_LABEL_DELAY_US)
    with pytest.raises(BundleError, match="label delay of 3 days, features here use 7"):
        validate_bundle(trained.bundle, label_delay_us=7 * DAY_US)
    meta = trained.bundle.metadata
    broken = msgspec.structs.replace(
        meta, contract=msgspec.structs.replace(meta.contract, vocabularies={"country": ()})
    )
    with pytest.raises(BundleError, match="vocabularies"):
        make_bundle(onnx.load_model_from_string(trained.bundle.onnx_bytes), broken)


def test_tuning_is_deterministic_by_seed(reference_features, history) -> None:  # type: ignore[no-untyped-def]
    y = np.asarray(history.column("is_fraud")).astype(np.int8)
    half = len(y) // 2
    tuning = Tuning(trials=3, timeout_seconds=0, max_trees=60, seed=11)
    runs = [
        tune_lightgbm(
            reference_features[:half], y[:half], reference_features[half:], y[half:], tuning
        )
        for _ in range(2)
    ]
    assert runs[0].trials == runs[1].trials
    assert runs[0].best == runs[1].best
    other = tune_lightgbm(
        reference_features[:half], y[:half], reference_features[half:], y[half:],
        dataclasses.replace(tuning, seed=12),
    )  # fmt: skip
    assert [t.params for t in other.trials] != [t.params for t in runs[0].trials]
    assert runs[0].best.n_estimators == runs[0].best_trial.trees
