"""Scoring inside Spark tasks: one ONNX Runtime session per task, features from fraud_core."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fraud_core.bundle import ModelBundle
from fraud_core.features import MODEL_INPUT_COLUMNS

PASSED_THROUGH = ("transaction_id", "card_id", "merchant_id", "amount", "timestamp", "is_fraud")
SCORES = "score float, is_alert boolean, reasons string"


def score_column(onnx_bytes: bytes) -> Column:
    """A struct column of SCORES, computed by the bundle in `onnx_bytes` from the model inputs.

    An iterator Arrow UDF: each task validates and loads the bundle once (it travels with the
    function), then scores batch after batch. Only `MODEL_INPUT_COLUMNS` go to Python and
    only the scores come back; the passed-through columns (ids, strings) stay in the JVM,
    where mapInArrow shipped every column both ways.
    """

    def score(batches: Iterator[tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        from fraud_core.bundle import bundle_from_bytes
        from fraud_core.features import feature_matrix
        from fraud_core.inference import Scorer

        scorer = Scorer(bundle_from_bytes(onnx_bytes))
        threshold = np.float32(scorer.threshold)
        for arrays in batches:
            x = feature_matrix(dict(zip(MODEL_INPUT_COLUMNS, arrays, strict=True)), scorer.contract)
            scores = scorer.score(x)
            alert = scores >= threshold
            reasons = np.full(len(scores), None, dtype=object)
            if alert.any():
                reasons[alert] = [",".join(r) for r in scorer.reasons(x[alert])]
            yield pa.StructArray.from_arrays(
                [pa.array(scores, pa.float32()), pa.array(alert), pa.array(reasons, pa.string())],
                names=["score", "is_alert", "reasons"],
            )

    udf = F.arrow_udf(score, SCORES)  # type: ignore[call-overload]
    return udf(*MODEL_INPUT_COLUMNS)


def scored(features: DataFrame, bundle: ModelBundle) -> DataFrame:
    """The passed-through columns of featurized rows plus their scores and the model version
    (a constant of the bundle, added in the JVM rather than shipped back with every row)."""
    with_inputs = features.withColumn("timestamp_us", F.unix_micros("timestamp"))
    return with_inputs.select(*PASSED_THROUGH, score_column(bundle.onnx_bytes).alias("s")).select(
        *PASSED_THROUGH, "s.*", F.lit(bundle.metadata.version).alias("model_version")
    )
