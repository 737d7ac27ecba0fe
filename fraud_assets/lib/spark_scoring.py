"""Scoring inside Spark tasks: one ONNX Runtime session per task, features from fraud_core."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

SCORED_SCHEMA = (
    "transaction_id string, card_id string, merchant_id string, amount double, "
    "timestamp timestamp, is_fraud boolean, score float, is_alert boolean, reasons string, "
    "model_version string"
)


def score_partitions(
    onnx_bytes: bytes,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A mapInPandas function scoring each batch with the bundle in `onnx_bytes`.

    The bundle travels with the function; each task validates and loads it once, then scores
    batch after batch. Input batches carry the raw columns, `timestamp_us` and the stateful
    features.
    """

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from fraud_core.bundle import bundle_from_bytes
        from fraud_core.features import feature_matrix
        from fraud_core.scorer import Scorer

        scorer = Scorer(bundle_from_bytes(onnx_bytes))
        for batch in batches:
            x = feature_matrix(batch)
            scores = scorer.score(x)
            alert = scores >= np.float32(scorer.threshold)
            reasons = np.full(len(batch), None, dtype=object)
            if alert.any():
                reasons[alert] = [",".join(r) for r in scorer.reasons(x[alert])]
            yield pd.DataFrame(
                {
                    "transaction_id": batch["transaction_id"],
                    "card_id": batch["card_id"],
                    "merchant_id": batch["merchant_id"],
                    "amount": batch["amount"],
                    "timestamp": batch["timestamp"],
                    "is_fraud": batch["is_fraud"],
                    "score": scores,
                    "is_alert": alert,
                    "reasons": reasons,
                    "model_version": scorer.version,
                }
            )

    return score
