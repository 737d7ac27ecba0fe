"""Score cache: L1 in-process (TTL + LRU) and L2 Redis (TTL), keyed by request AND model.

The key is a SHA-256 of the canonical request bytes, the model version, its role and the
feature version, so a new model never serves an old model's score and keys agree across processes
(Python's hash() is salted per process). Values are MessagePack, never pickle. Requests
carry their transaction_id, so hits are retries of the same transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import msgspec

from fraud_core.features import FEATURE_VERSION
from fraud_core.online_store import REDIS_FAULTS
from fraud_core.rollout import CHAMPION
from fraud_core.schema import Transaction
from fraud_core.scoring import Score
from serving.services.redis_lane import RedisLane
from serving.telemetry import Throttled

log = logging.getLogger(__name__)
KEY_PREFIX = "fraudscale:score:v2:"
WRITE_DELAY = 0.01

_encoder = msgspec.json.Encoder()
_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder(Score)


def cache_key(transaction: Transaction, model_version: str, role: str = CHAMPION) -> str:
    """The key of a transaction's score by one model in one role: a role never reads another
    role's score, even from the same model version."""
    digest = hashlib.sha256(_encoder.encode(transaction))
    digest.update(f"|{model_version}|{role}|{FEATURE_VERSION}".encode())
    return KEY_PREFIX + digest.hexdigest()


class LocalScores:
    """L1: least recently used scores, each kept at most `ttl` seconds after it was put.

    Entries are (expiry, Score) tuples in an OrderedDict, none of which the garbage collector
    tracks (Score has gc=False; such tuples are untracked after their first collection), so
    a full cache adds nothing to a collection's work (a tracked object per entry would make
    every full collection stall the requests in flight). `clock` is the time source, in
    seconds (tests pass their own)."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.ttl, self.clock = size, ttl, clock
        self._entries: OrderedDict[str, tuple[float, Score]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Score | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, score: Score) -> None:
        self._entries[key] = (self.clock() + self.ttl, score)
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)


class ScoreCache:
    def __init__(
        self,
        *,
        l1_size: int,
        ttl_seconds: float,
        redis: RedisLane | None = None,
    ) -> None:
        """`redis`: L2's Redis (with the time a call may take in all: a slower read counts as
        a miss, a slower write is skipped); None for L1 alone."""
        self.l1 = LocalScores(l1_size, ttl_seconds)
        self.redis = redis
        self.ttl = ttl_seconds
        self.hits = {"l1": 0, "l2": 0}
        self.misses = 0
        self.bypasses = 0
        """L2 reads or writes skipped because Redis failed."""
        self._unwritten: list[tuple[str, Score]] = []
        self._writer: asyncio.Task[None] | None = None
        self._unavailable = Throttled(log)

    def get_local(self, keys: Sequence[str]) -> list[Score] | None:
        """Every key's score from L1 (marked cached), or None if any is missing there."""
        found = [self.l1.get(k) for k in keys]
        if any(f is None for f in found):
            return None
        self.hits["l1"] += len(found)
        return [msgspec.structs.replace(f, cached=True) for f in found if f is not None]

    async def get_many(self, keys: Sequence[str]) -> list[Score | None]:
        found: list[Score | None] = [self.l1.get(k) for k in keys]
        self.hits["l1"] += sum(f is not None for f in found)
        missing = [i for i, f in enumerate(found) if f is None]
        if missing and self.redis is not None:
            try:
                # Raw MessagePack bytes (or None).
                values = await self.redis.read([keys[i] for i in missing])
            except REDIS_FAULTS as exc:
                self.bypasses += 1
                self._unavailable.warning("score cache L2 unavailable: %r", exc)
                values = [None] * len(missing)
            for i, value in zip(missing, values, strict=True):
                if value is not None:
                    score = _unpack.decode(value)
                    self.l1.put(keys[i], score)
                    found[i] = score
                    self.hits["l2"] += 1
        self.misses += sum(f is None for f in found)
        return [msgspec.structs.replace(f, cached=True) if f else None for f in found]

    def put_many(self, keys: Sequence[str], scores: Sequence[Score]) -> None:
        """Fill L1 now and L2 in the background: a request never waits on a cache write.

        L2 writes wait up to `WRITE_DELAY` seconds so that many batches share one round trip."""
        for key, score in zip(keys, scores, strict=True):
            self.l1.put(key, score)
        if self.redis is not None:
            self._unwritten.extend(zip(keys, scores, strict=True))
            if self._writer is None or self._writer.done():
                self._writer = asyncio.create_task(self._write_soon())

    async def _write_soon(self) -> None:
        await asyncio.sleep(WRITE_DELAY)
        await self._write()

    async def _write(self) -> None:
        assert self.redis is not None
        items, self._unwritten = self._unwritten, []
        if not items:
            return
        try:
            await self.redis.set_many(
                [(key, _pack.encode(score)) for key, score in items], int(self.ttl * 1000)
            )
        except REDIS_FAULTS as exc:
            self.bypasses += 1
            self._unavailable.warning("score cache L2 write skipped: %r", exc)

    async def drain(self) -> None:
        """Write what waits for L2 now (shutdown, tests)."""
        if self._writer is not None:
            await self._writer
        if self.redis is not None:
            await self._write()
