"""The REST service's pipelined Redis calls, on a real Redis: concurrent reads on one
connection each get their own keys' values, a read that times out leaves no late reply for
the next one to take, and a batch of writes lands or reports Redis's error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from fraud_core.online_store import connect_async
from fraud_devtools.redis_server import LocalRedis
from serving.services.redis_lane import RedisLane, RedisReplyError

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    """A plain client of the server's database 3, where the tests write and read."""
    with redis.Redis(port=redis_server.port, db=3) as client:
        yield client


@contextlib.asynccontextmanager
async def lane_at(url: str, timeout: float) -> AsyncIterator[RedisLane]:
    """A RedisLane on its own client for `url`, both closed afterwards."""
    client = connect_async(url)
    lane = RedisLane(client, timeout)
    try:
        yield lane
    finally:
        await lane.aclose()
        await client.aclose()


async def test_concurrent_reads_get_their_own_values_and_a_stall_leaves_nothing_behind(
    redis_server: LocalRedis, admin: redis.Redis
) -> None:
    admin.mset({f"k{i}": f"v{i}" for i in range(300)})
    admin.config_set("requirepass", "s3cret")  # the reads must log in and pick database 3
    async with lane_at(f"redis://:s3cret@127.0.0.1:{redis_server.port}/3", 0.1) as reads:
        assert reads.pipelined is not None
        wanted = [[f"k{(i * 7 + j) % 310}" for j in range(i % 12 + 1)] for i in range(200)]
        got = await asyncio.gather(*(reads.read(keys) for keys in wanted))
        for keys, values in zip(wanted, got, strict=True):
            assert values == [f"v{k[1:]}".encode() if int(k[1:]) < 300 else None for k in keys]

        admin.client_pause(400)  # the server answers nobody for 0.4 s
        with pytest.raises(TimeoutError):
            await reads.read(["k1"])
        await asyncio.sleep(0.5)
        # Were the late reply to k1 still queued, this read would take it.
        assert await reads.read(["k2", "k3"]) == [b"v2", b"v3"]


async def test_a_wrong_password_fails_the_read_with_redis_own_reason(
    redis_server: LocalRedis, admin: redis.Redis
) -> None:
    admin.config_set("requirepass", "s3cret")
    async with lane_at(f"redis://:wrong@127.0.0.1:{redis_server.port}/0", 1.0) as reads:
        with pytest.raises(Exception, match=r"WRONGPASS|invalid"):
            await reads.read(["k1"])


async def test_writes_land_with_their_time_to_live_and_a_refused_one_says_why(
    redis_server: LocalRedis, admin: redis.Redis
) -> None:
    async with lane_at(f"redis://127.0.0.1:{redis_server.port}/3", 1.0) as lane:
        await lane.set_many([(f"w{i}", f"x{i}".encode()) for i in range(50)], 60_000)
        assert admin.mget(["w0", "w49"]) == [b"x0", b"x49"]
        assert 0 < admin.pttl("w7") <= 60_000
        with pytest.raises(RedisReplyError, match="expire"):
            await lane.set_many([("w1", b"y"), ("w2", b"y")], 0)  # Redis refuses PX 0
        # Every reply of the refused batch was taken: the next read gets its own.
        assert await lane.read(["w3", "nope"]) == [b"x3", None]
