"""Scoring inside Spark tasks: one ONNX Runtime session per task, features from fraud_core."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

PASSED_THROUGH = ("transaction_id", "card_id", "merchant_id", "amount", "timestamp", "is_fraud")
SCORED_SCHEMA = (
    "transaction_id string, card_id string, merchant_id string, amount double, "
    "timestamp timestamp, is_fraud boolean, score float, is_alert boolean, reasons string, "
    "model_version string"
)


def score_partitions(
    onnx_bytes: bytes,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A mapInArrow function scoring each batch with the bundle in `onnx_bytes`.

    The bundle travels with the function; each task validates and loads it once, then scores
    batch after batch. Input batches carry the raw columns, `timestamp_us` and the stateful
    features. Arrow in and out: the passed-through columns are never converted (mapInPandas
    made Python objects of every string and back: ~15 % of the step's time).
    """

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from fraud_core.bundle import bundle_from_bytes
        from fraud_core.features import feature_matrix
        from fraud_core.scorer import Scorer

        scorer = Scorer(bundle_from_bytes(onnx_bytes))
        threshold = np.float32(scorer.threshold)
        for batch in batches:
            x = feature_matrix(dict(zip(batch.schema.names, batch.columns, strict=True)))
            scores = scorer.score(x)
            alert = scores >= threshold
            reasons = np.full(len(batch), None, dtype=object)
            if alert.any():
                reasons[alert] = [",".join(r) for r in scorer.reasons(x[alert])]
            yield pa.RecordBatch.from_arrays(
                [
                    *(batch.column(name) for name in PASSED_THROUGH),
                    pa.array(scores, pa.float32()),
                    pa.array(alert),
                    pa.array(reasons, pa.string()),
                    pa.array([scorer.version] * len(batch), pa.string()),
                ],
                names=[*PASSED_THROUGH, "score", "is_alert", "reasons", "model_version"],
            )

    return score
