"""Roles in a rollout and the decision log: which model answers which card, and the record
every decision on every path leaves.

Roles. The `champion` answers by default. An optional `canary` answers a share of cards,
chosen by a hash of the card id, so one card always sees one model (sticky) and every path
(REST, stream) picks the same one. An optional challenger scores in the `shadow` role: its
scores go to the decision log only, never to a response, a cache, an alert or any state.

The decision log. One `DecisionRecord` per transaction, model and role, whatever the path.
Its id is a digest of (transaction id, model version, role), so a retry, a redelivery or a
second path deciding the same transaction with the same model writes the same id, and a
reader deduplicates by it. The feature vector is the float32 model input as served: the
skew check and the verdict read it back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NotRequired, Protocol, TypedDict, Unpack

import msgspec
import numpy as np
import xxhash

from fraud_core.features import FEATURE_VERSION


def _compiled() -> Callable[[], Any] | None:
    try:
        from fraud_native import Messages
    except ImportError:  # the `native` extra is not installed: the specification serves
        return None
    return Messages


Messages = _compiled()
"""`fraud_native.Messages` (a compiled buffer of messages), or None without fraud_native."""
COMPILED = Messages is not None
"""Whether `decision_log_messages` runs compiled (fraud_native, the `native` extra)."""

CHAMPION = "champion"
CANARY = "canary"
SHADOW = "shadow"
CHALLENGER = "challenger"
"""The plan's slot (store pointer, registry alias) whose model scores in the shadow role."""
ROLES = (CHAMPION, CANARY, SHADOW)
_BUCKETS = float(1 << 64)
_xxh3_64 = xxhash.xxh3_64_intdigest
"""XXH3 (xxHash's stable 64- and 128-bit hashes since 0.8.0): 0.09-0.1 µs a key against
0.5 µs for hashlib's BLAKE2b, which cost the stream ~1.5 µs a transaction over its three
uses (canary, shadow sample, decision id). Spreading keys evenly is all they need; nothing
here is a secret."""


class RolloutPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What each role serves: bundle versions by role (None: the role is empty)."""

    champion: str | None = None
    canary: str | None = None
    canary_share: float = 0.0
    """Share of cards in [0, 1] the canary answers (by the card id's `bucket`)."""
    challenger: str | None = None
    """Scored in the shadow role."""


def bucket(key: str) -> float:
    """A key's place in [0, 1), the same in every process and path (not Python's salted
    hash): its XXH3-64 digest as a fraction of 2**64."""
    return _xxh3_64(key.encode()) / _BUCKETS


def in_canary(card_id: str, share: float) -> bool:
    """Whether the canary answers this card at a traffic share of `share`."""
    return share > 0.0 and _xxh3_64(card_id.encode()) < _bound(share)


def _bound(share: float) -> int:
    """The digests below which a key is in a `share` (compared as integers, no float made
    per key): a key whose `bucket` is within a float's rounding of the share may fall on the
    other side than `bucket(key) < share` says, the same way on every path."""
    return math.ceil(share * _BUCKETS)


def canary_cards(card_ids: Sequence[str], share: float) -> list[bool]:
    """`in_canary` of each card, in one call (digests compared with the share's bound: no
    float made per card)."""
    if share <= 0.0:
        return [False] * len(card_ids)
    bound, xxh3 = _bound(share), _xxh3_64
    return [xxh3(card.encode()) < bound for card in card_ids]


def below_share(keys: Sequence[str], share: float) -> list[int]:
    """Positions of the keys whose `bucket` is below `share` (as `canary_cards` compares)."""
    bound, xxh3 = _bound(share), _xxh3_64
    return [i for i, key in enumerate(keys) if xxh3(key.encode()) < bound]


def decision_id(transaction_id: str, model_version: str, role: str) -> str:
    return _decision_id(transaction_id, _id_suffix(model_version, role))


def _id_suffix(model_version: str, role: str) -> bytes:
    return f"\x1f{model_version}\x1f{role}".encode()


def _decision_id(transaction_id: str, suffix: bytes) -> str:
    """The XXH3-128 digest (32 hex digits) of the transaction id and a model's
    `_id_suffix`: (transaction id, model version, role) joined by the unit separator."""
    return xxhash.xxh3_128_hexdigest(transaction_id.encode() + suffix)


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One decision of one model in one role on one path (the `<prefix>.decisions` topic's
    value, keyed by transaction id; a row of the batch path's `decisions` table)."""

    decision_id: str
    transaction_id: str
    card_id: str
    path: str
    role: str
    model_name: str
    model_version: str
    feature_version: str
    features: bytes
    """The float32 model input as served, in FEATURE_NAMES order: little-endian float32s
    (base64 in JSON; `feature_vector` reads them). A third the size of a JSON number list,
    so the log costs the stream and the broker a third of the bytes, and exact."""
    score: float
    threshold: float
    decision: str
    event_time_us: int
    decision_time_us: int
    degraded: bool = False
    """The features were served without the card's and merchant's state (Redis down or slow:
    the contract's defaults); the skew check attributes their differences to it."""


def feature_vector(record: DecisionRecord) -> np.ndarray:
    """A record's feature vector as float32s."""
    return np.frombuffer(record.features, dtype="<f4")


def now_us() -> int:
    return time.time_ns() // 1000


class DecisionInputs(TypedDict):
    """One model's scores of a batch of transactions, as the decision log takes them
    (`decision_records`, `decision_log_messages`)."""

    path: str
    role: str
    model_name: str
    model_version: str
    threshold: float
    transaction_ids: Sequence[str]
    card_ids: Sequence[str]
    event_times_us: Sequence[int]
    features: np.ndarray
    """The model inputs, a row per transaction (float32 as served)."""
    scores: np.ndarray
    """The model's float32 scores."""
    decided_at_us: NotRequired[int | None]
    """When the decisions were made (None, or left out: now)."""
    degraded: NotRequired[bool]


def _decided_at(batch: DecisionInputs) -> int:
    decided = batch.get("decided_at_us")
    return now_us() if decided is None else decided


def decision_records(**batch: Unpack[DecisionInputs]) -> list[DecisionRecord]:
    """The records of one model's scores for a batch of transactions."""
    decided = _decided_at(batch)
    threshold, degraded = batch["threshold"], batch.get("degraded", False)
    path, role, model_name = batch["path"], batch["role"], batch["model_name"]
    model_version = batch["model_version"]
    cut = np.float32(threshold)
    vectors = np.ascontiguousarray(batch["features"], dtype="<f4")
    suffix = _id_suffix(model_version, role)
    rows = zip(
        batch["transaction_ids"], batch["card_ids"], batch["event_times_us"], vectors,
        batch["scores"], strict=True,
    )  # fmt: skip
    return [
        DecisionRecord(
            decision_id=_decision_id(tid, suffix),
            transaction_id=tid,
            card_id=card,
            path=path,
            role=role,
            model_name=model_name,
            model_version=model_version,
            feature_version=FEATURE_VERSION,
            features=vector.tobytes(),
            score=float(score),
            threshold=threshold,
            decision="alert" if score >= cut else "allow",
            event_time_us=int(ts),
            decision_time_us=decided,
            degraded=degraded,
        )
        for tid, card, ts, vector, score in rows
    ]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DecisionRecord)


def encode_decision(record: DecisionRecord) -> bytes:
    return _encoder.encode(record)


def decode_decision(data: bytes) -> DecisionRecord:
    return _decoder.decode(data)


def decision_messages(records: Iterable[DecisionRecord]) -> list[tuple[bytes, bytes]]:
    """Each record as the decisions topic holds it: (transaction id, JSON record). The JSON
    of all of them is encoded in one call, one line each (JSON escapes a newline in a string,
    so lines are records)."""
    records = list(records)
    values = _encoder.encode_lines(records).split(b"\n")
    return [(r.transaction_id.encode(), v) for r, v in zip(records, values[:-1], strict=True)]


def decision_log_messages(**batch: Unpack[DecisionInputs]) -> list[tuple[bytes, bytes]]:
    """`decision_messages(decision_records(...))` of one model's float32 scores of a batch:
    the same bytes, made in one compiled call when fraud_native is installed (0.33 µs a
    decision against 1.24 for the structs and their JSON in Python; tests hold the two
    equal)."""
    fields = _compiled_fields(batch)
    if Messages is None or fields is None:
        return decision_messages(decision_records(**batch))
    messages = Messages()
    messages.add_decisions(**fields)
    return messages.pairs()


class MessageSink(Protocol):
    """Where `add_decision_log_messages` puts messages (`fraud_native.Messages`)."""

    def add_decisions(self, **fields: Any) -> None: ...
    def extend(self, messages: Sequence[tuple[bytes, bytes]]) -> None: ...


def add_decision_log_messages(sink: MessageSink, **batch: Unpack[DecisionInputs]) -> None:
    """`decision_log_messages(...)`, added to `sink`: made straight into its buffer by the
    compiled call, without a Python object per message."""
    fields = _compiled_fields(batch)
    if fields is None:
        sink.extend(decision_messages(decision_records(**batch)))
    else:
        sink.add_decisions(**fields)


def _compiled_fields(batch: DecisionInputs) -> dict[str, Any] | None:
    """The compiled call's arguments for `batch`, or None where the specification makes
    its messages (no fraud_native, or scores that are not float32)."""
    scores = batch["scores"]
    if not COMPILED or scores.dtype != np.float32:
        return None
    vectors = np.ascontiguousarray(batch["features"], dtype="<f4")
    return {
        "transaction_ids": batch["transaction_ids"],
        "card_ids": batch["card_ids"],
        "event_times_us": batch["event_times_us"],
        "features": vectors.tobytes(),
        "width": vectors.shape[1] if vectors.ndim == 2 else 0,
        "scores": scores.astype("<f4", copy=False).tobytes(),
        "path": batch["path"],
        "role": batch["role"],
        "model_name": batch["model_name"],
        "model_version": batch["model_version"],
        "feature_version": FEATURE_VERSION,
        "threshold": batch["threshold"],
        "decided_at_us": _decided_at(batch),
        "degraded": batch.get("degraded", False),
    }
