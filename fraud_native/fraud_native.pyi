"""fraudscale's compiled hot paths (fraud_native/src/lib.rs); each has its specification in
fraud_core, held equal to it by tests."""

from collections.abc import Sequence

def decision_messages(
    *,
    transaction_ids: Sequence[str],
    card_ids: Sequence[str],
    event_times_us: Sequence[int],
    features: bytes,
    width: int,
    scores: bytes,
    path: str,
    role: str,
    model_name: str,
    model_version: str,
    feature_version: str,
    threshold: float,
    decided_at_us: int,
    degraded: bool,
) -> list[tuple[bytes, bytes]]:
    """The decision log's (key, JSON value) messages of one model's scores of a batch, as
    fraud_core.rollout's `decision_records` and `decision_messages` make them."""
