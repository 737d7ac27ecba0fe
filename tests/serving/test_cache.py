"""The in-process score cache (L1): least recently used out first, entries expire, and a full
cache gives the garbage collector nothing to scan."""

from __future__ import annotations

import gc

import pytest

from fraud_core.scoring import Score
from serving.cache import LocalScores

pytestmark = pytest.mark.unit


def score(i: int) -> Score:
    return Score(
        transaction_id=f"t{i}", score=0.5, decision="allow", threshold=0.9,
        model_name="m", model_version="1", reasons=("amount", "hour"),
    )  # fmt: skip


def test_least_recently_used_goes_first_and_entries_expire() -> None:
    now = [100.0]
    cache = LocalScores(size=2, ttl=0.2, clock=lambda: now[0])
    cache.put("a", score(1))
    cache.put("b", score(2))
    assert cache.get("a") == score(1)  # "a" is now the most recently used
    cache.put("c", score(3))
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (score(1), None, score(3))
    assert len(cache) == 2
    now[0] += 0.2
    assert cache.get("a") == score(1)  # kept for exactly `ttl`
    now[0] += 0.001
    assert cache.get("a") is None
    assert cache.get("c") is None


def test_a_full_cache_adds_nothing_for_the_garbage_collector_to_scan() -> None:
    cache = LocalScores(size=10_000, ttl=60)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        cache.put(f"k{i}", score(i))
    gc.collect()
    assert len(gc.get_objects()) - before < 100
