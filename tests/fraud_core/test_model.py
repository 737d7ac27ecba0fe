"""Model bundle and scorer: refusal of mismatched bundles, batch-independent scores."""

from pathlib import Path

import msgspec
import numpy as np
import onnx
import pytest

from fraud_core.bundle import BundleError, bundle_from_bytes, make_bundle, read_bundle, write_bundle
from fraud_core.features import FEATURE_NAMES, FEATURE_VERSION
from fraud_core.inference import Scorer

pytestmark = pytest.mark.unit


def test_trained_model_is_useful_and_alerts_at_the_chosen_rate(trained, reference_features) -> None:  # type: ignore[no-untyped-def]
    meta = trained.bundle.metadata
    assert meta.feature_version == FEATURE_VERSION
    assert meta.feature_names == FEATURE_NAMES
    assert trained.metrics["pr_auc"] > 0.5
    assert trained.metrics["roc_auc"] > 0.9
    scores = Scorer(trained.bundle).score(reference_features)
    assert 0.002 < float(np.mean(scores >= meta.threshold)) < 0.05


def test_onnx_matches_native_lightgbm(trained, reference_features) -> None:  # type: ignore[no-untyped-def]
    native = trained.booster.predict(reference_features)
    onnx_scores = Scorer(trained.bundle).score(reference_features)
    assert float(np.max(np.abs(native - onnx_scores))) < 1e-4


def test_bundle_round_trips_through_a_file(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_bundle(trained.bundle, tmp_path / "models" / "model.onnx")
    assert read_bundle(path) == trained.bundle
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temp file left


def with_metadata(bundle, **changes):  # type: ignore[no-untyped-def]
    model = onnx.load_model_from_string(bundle.onnx_bytes)
    meta = msgspec.structs.replace(bundle.metadata, **changes)
    prop = next(p for p in model.metadata_props if p.key == "fraudscale")
    prop.value = msgspec.json.encode(meta).decode()
    return model.SerializeToString()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"feature_version": "0.old"}, "feature version '0.old' differs"),
        (
            {"feature_names": (*FEATURE_NAMES[:-1], "shoe_size")},
            "missing ['merchant_label_count_30d'], unexpected ['shoe_size']",
        ),
        ({"feature_names": FEATURE_NAMES[::-1]}, "other order"),
        ({"threshold": 1.5}, "threshold 1.5 is outside"),
    ],
)
def test_a_bundle_for_other_features_is_refused_with_the_reason(
    trained, tmp_path: Path, changes, message
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "model.onnx"
    path.write_bytes(with_metadata(trained.bundle, **changes))
    with pytest.raises(BundleError) as info:
        read_bundle(path)
    assert message in str(info.value)
    with pytest.raises(BundleError):
        Scorer(bundle_from_bytes(path.read_bytes()))


def test_an_onnx_model_without_our_metadata_is_refused(trained) -> None:  # type: ignore[no-untyped-def]
    model = onnx.load_model_from_string(trained.bundle.onnx_bytes)
    del model.metadata_props[:]
    with pytest.raises(BundleError, match="not a fraudscale bundle"):
        bundle_from_bytes(model.SerializeToString())
    with pytest.raises(BundleError, match="not an ONNX model"):
        bundle_from_bytes(b"certainly not protobuf")


def test_a_model_of_the_wrong_input_width_is_refused(trained) -> None:  # type: ignore[no-untyped-def]
    model = onnx.load_model_from_string(trained.bundle.onnx_bytes)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 5
    with pytest.raises(BundleError, match="width 5"):
        make_bundle(model, trained.bundle.metadata)


def test_a_rows_score_does_not_depend_on_its_batch(trained, reference_features) -> None:  # type: ignore[no-untyped-def]
    scorer = Scorer(trained.bundle)
    rows = reference_features[:400]
    together = scorer.score(rows)
    alone = np.concatenate([scorer.score(rows[i : i + 1]) for i in range(len(rows))])
    shuffled_order = np.random.default_rng(0).permutation(len(rows))
    shuffled = np.empty_like(together)
    shuffled[shuffled_order] = scorer.score(rows[shuffled_order])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(together, shuffled)


def test_scorer_rejects_a_matrix_of_the_wrong_shape(trained) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="feature matrix"):
        Scorer(trained.bundle).score(np.zeros((2, 3), dtype=np.float32))


def test_reasons_name_the_features_that_stand_out(trained, reference_features) -> None:  # type: ignore[no-untyped-def]
    scorer = Scorer(trained.bundle)
    row = np.asarray(trained.bundle.metadata.feature_means, dtype=np.float32)[None, :].copy()
    burst = FEATURE_NAMES.index("card_txn_count_1h")
    row[0, burst] = 40.0
    assert scorer.reasons(row, k=1) == [["card_txn_count_1h"]]
