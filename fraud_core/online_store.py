"""The online store's records: where each card's and merchant's state lives in Redis, its
bytes, and how long it lives.

The stream workers (`queue_states` on their asyncio pipeline), the stream's warm start and the
nightly `online_state` asset (`write_states`, `load_history`) write states here; the REST
service reads them with `card_key` and `merchant_key`. One definition, so every writer sets the
same keys, encoding and time to live.

Where Redis is: `redis_url` is one of
- `redis://[user:password@]host:port/db` (also `rediss://`, `unix://`): one server;
- `redis+sentinel://[user:password@]host:port,host:port,.../service[/db]`: the primary that
  these Sentinels name `service`, followed through failovers;
- `redis+cluster://[user:password@]host:port,host:port,...`: a Redis Cluster (some of its
  nodes; the rest are discovered). A multi-key command there must stay in one hash slot, so
  `read_many` reads per slot, one round trip per node, and writers use pipelines (routed
  per node) rather than multi-key commands or scripts.
`connect` and `connect_async` make the client for any of them, so the REST service, the stream
workers and the nightly assets accept the same setting.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias, cast
from urllib.parse import unquote

import pyarrow as pa

from fraud_core.features import CARD_RETENTION_US, DAY_US, MERCHANT_RETENTION_US
from fraud_core.state import CardState, MerchantState, encode_state, end_states

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    AsyncClient: TypeAlias = aioredis.Redis | AsyncRedisCluster
    """What `connect_async` makes (a Sentinel's primary is an `aioredis.Redis`)."""

STATE_KEY_PREFIX = "fraudscale:state:v1"

CARD_STATE_TTL_MS = (CARD_RETENTION_US + DAY_US) // 1000
"""A card's state outlives its longest window by a day: a card silent for longer has nothing
left in any window, and its missing key reads as the same empty state."""
MERCHANT_STATE_TTL_MS = (MERCHANT_RETENTION_US + DAY_US) // 1000


def card_key(card_id: str) -> str:
    """Where a card's state lives in the online store."""
    return f"{STATE_KEY_PREFIX}:card:{card_id}"


def merchant_key(merchant_id: str) -> str:
    """Where a merchant's label state lives in the online store."""
    return f"{STATE_KEY_PREFIX}:merchant:{merchant_id}"


class Pipeline(Protocol):
    """What `queue_states` needs of a redis-py pipeline (sync or asyncio)."""

    def set(self, name: str, value: bytes, *, px: int) -> Any: ...


def queue_states(
    pipe: Pipeline, cards: Mapping[str, CardState], merchants: Mapping[str, MerchantState]
) -> int:
    """Queue one SET with its TTL per state on `pipe` (executed by the caller); returns how
    many were queued."""
    return queue_encoded(pipe, encoded_states(cards, merchants))


def queue_encoded(pipe: Pipeline, items: Iterable[tuple[str, bytes, int]]) -> int:
    """Queue a SET with its TTL for each (key, value, ttl_ms) on `pipe`; returns how many."""
    queued = 0
    for key, value, ttl_ms in items:
        pipe.set(key, value, px=ttl_ms)
        queued += 1
    return queued


SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"


class RedisTarget(NamedTuple):
    """A `redis+sentinel://` or `redis+cluster://` URL's parts."""

    scheme: str
    nodes: list[tuple[str, int]]
    service: str
    """The Sentinel service name (empty for a cluster)."""
    db: int
    username: str | None
    password: str | None


def parse_redis_url(url: str) -> RedisTarget | None:
    """The parts of a Sentinel or Cluster URL; None for any other (redis-py's `from_url`
    reads those). ValueError names what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in (SENTINEL_SCHEME, CLUSTER_SCHEME):
        return None
    netloc, _, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = []
    for node in hosts.split(","):
        host, colon, port = node.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"{url!r}: {node!r} is not host:port")
        nodes.append((host, int(port)))
    parts = [p for p in path.split("/") if p]
    if scheme == SENTINEL_SCHEME:
        if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ValueError(f"{url!r}: expected {SENTINEL_SCHEME}://host:port,.../service[/db]")
        return RedisTarget(
            scheme, nodes, parts[0], int(parts[1]) if len(parts) == 2 else 0, username, password
        )
    if parts:
        raise ValueError(f"{url!r}: a cluster has no database or service ({path!r})")
    return RedisTarget(scheme, nodes, "", 0, username, password)


def _timeouts(timeout: float | None) -> dict[str, Any]:
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


def _client(url: str, timeout: float | None, redis_class: Any, cluster: Any, sentinel: Any) -> Any:
    target = parse_redis_url(url)
    if target is None:
        return redis_class.from_url(url, **_timeouts(timeout))
    auth = {"username": target.username, "password": target.password}
    if target.scheme == CLUSTER_SCHEME:
        # Without full coverage, a primary's death fails only its own slots' reads until its
        # replica takes over (the rest of the cluster keeps answering).
        return cluster.RedisCluster(
            startup_nodes=[cluster.ClusterNode(host, port) for host, port in target.nodes],
            require_full_coverage=False, **auth, **_timeouts(timeout),
        )  # fmt: skip
    sentinels = sentinel.Sentinel(
        target.nodes, sentinel_kwargs=_timeouts(timeout), **_timeouts(timeout)
    )
    primary = sentinels.master_for(target.service, redis_class=redis_class, db=target.db, **auth)
    # Its own list of the Sentinels' clients to close: redis-py reorders `sentinels.sentinels`
    # from concurrent lookups without a lock and can lose one from the list during a failover.
    primary.sentinel_clients = tuple(sentinels.sentinels)
    return primary


def connect(url: str, *, timeout: float | None = None) -> redis.Redis | RedisCluster:
    """A blocking client for `url` (any of the module's URL forms)."""
    import redis  # the serving, streaming and assets extras install it
    from redis import cluster, sentinel

    class SentinelPrimary(redis.Redis):
        """Closing it closes its pool (redis-py leaves a pool it was given open) and the
        connections to the Sentinels too (if any)."""

        sentinel_clients: tuple[redis.Redis, ...] = ()

        def close(self) -> None:
            super().close()
            self.connection_pool.disconnect()
            for client in self.sentinel_clients:
                client.close()

    return _client(url, timeout, SentinelPrimary, cluster, sentinel)


def connect_async(url: str, *, timeout: float | None = None) -> AsyncClient:
    """An asyncio client for `url` (any of the module's URL forms). A Sentinel client asks
    the Sentinels for the primary whenever it opens a connection, so it follows failovers; a
    cluster client follows slot moves and promoted replicas."""
    import redis.asyncio as aioredis
    from redis.asyncio import cluster, sentinel

    class SentinelPrimary(aioredis.Redis):
        """Closing it closes its pool (redis-py leaves a pool it was given open) and the
        connections to the Sentinels too (if any)."""

        sentinel_clients: tuple[aioredis.Redis, ...] = ()

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            await super().aclose(close_connection_pool)
            await self.connection_pool.disconnect()
            for client in self.sentinel_clients:
                await client.aclose()

    return _client(url, timeout, SentinelPrimary, cluster, sentinel)


REDIS_FAULTS = Exception
"""What a Redis read or write may raise, answered with defaults (reads) or skipped (writes):
besides redis-py's errors, socket errors and timeouts, redis-py 8.1's cluster pipeline raises
AttributeError and RuntimeError when concurrent requests race on a connection it re-opens
during a failover. None of them may fail a request or stop a stream."""


@functools.cache
def _cluster_classes() -> tuple[type, ...]:
    from redis.asyncio.cluster import RedisCluster as AsyncCluster
    from redis.cluster import RedisCluster

    return (RedisCluster, AsyncCluster)


def is_cluster(client: object) -> bool:
    """Whether `client` talks to a Redis Cluster (multi-key commands only within a slot)."""
    return isinstance(client, _cluster_classes())


async def read_many(
    client: AsyncClient, keys: Sequence[str], timeout: float | None = None
) -> list[bytes | None]:
    """The values of `keys`, in order (None where missing), in one round trip: one MGET on a
    single server, one MGET per hash slot pipelined to each node of a cluster.

    TimeoutError after `timeout` seconds in all: the clients' socket timeouts bound each
    attempt, but a cluster client retries and waits for a failed primary's replacement
    (seconds), and a reader that must answer in milliseconds gives up first."""
    async with asyncio.timeout(timeout):
        # decode_responses is off: raw bytes.
        if is_cluster(client):
            return cast(list[bytes | None], await client.mget_nonatomic(keys))  # type: ignore[union-attr]
        return cast(list[bytes | None], await client.mget(keys))


def write_states(
    redis_url: str,
    cards: Mapping[str, CardState],
    merchants: Mapping[str, MerchantState],
    *,
    chunk: int = 10_000,
) -> None:
    """Write states to the Redis at `redis_url`, `chunk` keys per round trip."""
    write_encoded(redis_url, encoded_states(cards, merchants), chunk=chunk)


def encoded_states(
    cards: Mapping[str, CardState], merchants: Mapping[str, MerchantState]
) -> Iterator[tuple[str, bytes, int]]:
    """(key, value, time to live in ms) of each state, as every writer stores it."""
    for card_id, card in cards.items():
        yield card_key(card_id), encode_state(card), CARD_STATE_TTL_MS
    for merchant_id, merchant in merchants.items():
        yield merchant_key(merchant_id), encode_state(merchant), MERCHANT_STATE_TTL_MS


def write_encoded(
    redis_url: str, items: Iterable[tuple[str, bytes, int]], *, chunk: int = 10_000
) -> int:
    """SET each (key, value, ttl_ms) at `redis_url`, `chunk` keys per round trip (pipelined;
    on a cluster, to each node); returns how many were written. SETs repeat safely, so a
    retried writer (a Spark task run again) writes the same."""
    client = connect(redis_url)
    written = 0
    rest = iter(items)
    try:
        while part := list(itertools.islice(rest, chunk)):
            pipe = client.pipeline(transaction=False)
            written += queue_encoded(pipe, part)
            pipe.execute()
    finally:
        client.close()
    return written


def load_history(history: pa.Table, redis_url: str, label_delay_us: int) -> tuple[int, int]:
    """Replay labelled `history` (fraud_core.state.end_states, labels known `label_delay_us`
    after their transactions) and write every card's and merchant's final state to the
    online store; returns how many of each."""
    cards, merchants = end_states(history, label_delay_us=label_delay_us)
    write_states(redis_url, cards, merchants)
    return len(cards), len(merchants)
