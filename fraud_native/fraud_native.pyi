"""fraudscale's compiled hot paths (fraud_native/src/lib.rs); each has its specification in
fraud_core, held equal to it by tests."""

from collections.abc import Sequence
from typing import Any

class Messages:
    """A topic's keyed messages gathered in one buffer: decisions added as fraud_core.rollout's
    `decision_records` and `decision_messages` make them, record batches made as
    `record_batches` makes them (each message to its key's partition), with no Python object
    per message in between."""

    def __len__(self) -> int: ...
    def add_decisions(
        self,
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
    ) -> None:
        """The decision log's (key, JSON value) messages of one model's scores of a batch,
        added at the end; all of them, or none when it fails."""
    def extend(self, messages: Sequence[tuple[bytes, bytes]]) -> None: ...
    def pairs(self) -> list[tuple[bytes, bytes]]: ...
    def record_batches(
        self, partition_count: int, timestamp_ms: int, max_bytes: int, transactional: bool
    ) -> list[tuple[int, RecordBatch]]: ...

class RecordBatch:
    """A closed Kafka record batch (format v2, uncompressed) that aiokafka's producer takes
    in place of its `BatchBuilder` (`send_batch`)."""

    def record_count(self) -> int: ...
    def size(self) -> int: ...
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def append(self, **kwargs: Any) -> None: ...
    def _set_producer_state(
        self, producer_id: int, producer_epoch: int, base_sequence: int
    ) -> None: ...
    def _build(self) -> bytes: ...

def record_batches(
    keys: Sequence[bytes | None],
    values: Sequence[bytes],
    partitions: Sequence[int],
    partition_count: int,
    timestamp_ms: int,
    max_bytes: int,
    transactional: bool,
) -> list[tuple[int, RecordBatch]]:
    """A topic's records as closed record batches by partition: `partitions[i]`, or the
    key's murmur2 partition of `partition_count` where it is negative; a batch is started
    whenever the next record would take it past `max_bytes`, as aiokafka's `BatchBuilder`
    splits them."""
