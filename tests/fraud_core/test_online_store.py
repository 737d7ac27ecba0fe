"""Where Redis is: the Sentinel and Cluster URL forms every component accepts."""

from __future__ import annotations

import pytest

from fraud_core.online_store import RedisTarget, parse_redis_url


def test_a_sentinel_url_names_its_sentinels_service_database_and_credentials() -> None:
    url = "redis+sentinel://app:s%40cret@10.0.0.1:26379,sentinel-2:26380/fraud/3"
    assert parse_redis_url(url) == RedisTarget(
        "redis+sentinel", [("10.0.0.1", 26379), ("sentinel-2", 26380)], "fraud", 3, "app", "s@cret"
    )
    assert parse_redis_url("redis+sentinel://h:1/fraud").db == 0  # type: ignore[union-attr]


def test_a_cluster_url_lists_nodes_and_plain_urls_are_left_to_redis_py() -> None:
    target = parse_redis_url("redis+cluster://:pw@a:7000,b:7001")
    assert target == RedisTarget("redis+cluster", [("a", 7000), ("b", 7001)], "", 0, None, "pw")
    assert parse_redis_url("redis://127.0.0.1:6379/0") is None
    assert parse_redis_url("unix:///run/redis.sock") is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://h:1", "service"),
        ("redis+sentinel://h:1/fraud/x", "service"),
        ("redis+sentinel://h/fraud", "not host:port"),
        ("redis+cluster://a:1,b:x", "not host:port"),
        ("redis+cluster://a:1/0", "no database"),
    ],
)
def test_a_malformed_url_is_refused_with_its_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_redis_url(url)
