"""The REST service's Redis reads (score cache L2, card and merchant states): MGETs pipelined
on one connection, packed and parsed by hiredis.

redis-py's asyncio client spends about 100 µs of CPU on one MGET (command packing in Python,
a pooled connection taken and given back, retry, timeout and observability layers); on this
connection an MGET costs about 20 µs, and concurrent batches' reads share it without waiting
for each other's replies (docs/benchmarks.md has the figures). Writes stay on redis-py.

It reads from the server the redis-py client talks to: the same host, port, credentials and
database, or for a Sentinel client the primary the Sentinels name when it connects (after a
failover the broken connection fails the reads in flight and the next read connects to the
new primary). A Redis Cluster, TLS or a Unix socket keep redis-py's reads (`Reads.redis_py`).

Faults raise (ConnectionError, TimeoutError, ResponseError), and callers answer with defaults
as before. A read that times out closes the connection: a reply that late means the server
or the network is stuck, and later reads must not queue behind it. The next read reconnects.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import hiredis

from fraud_core.online_store import is_cluster, read_many

if TYPE_CHECKING:
    from fraud_core.online_store import AsyncClient


_pack: Any = hiredis.pack_command  # its stub takes a 1-tuple only


class RedisReplyError(Exception):
    """Redis answered a command with an error."""


class _Replies(asyncio.Protocol):
    """Commands' replies, in the order the commands were written (RESP is ordered)."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                future = self.waiting.popleft()
                if future.done():
                    continue  # its reader timed out and went away
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(RedisReplyError(str(reply)))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.fail(ConnectionError(f"unreadable reply from Redis: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"connection to Redis lost: {exc!r}" if exc else "closed"))

    def fail(self, error: Exception) -> None:
        """Close the connection; every read waiting on it raises `error`."""
        transport, self.transport = self.transport, None
        waiting, self.waiting = self.waiting, collections.deque()
        for future in waiting:
            if not future.done():
                future.set_exception(error)
        if transport is not None:
            transport.abort()


class PipelinedReads:
    """MGETs of one Redis server (or a Sentinel's primary) on one pipelined connection."""

    def __init__(self, client: AsyncClient) -> None:
        pool = client.connection_pool  # type: ignore[union-attr]
        self.pool = pool
        kwargs = pool.connection_kwargs
        user, password = kwargs.get("username"), kwargs.get("password")
        self._handshake = [
            *([("AUTH", *([user] if user else []), password)] if password else []),
            *([("SELECT", str(kwargs["db"]))] if kwargs.get("db") else []),
        ]
        self._connected: _Replies | None = None
        self._connecting: asyncio.Future[_Replies] | None = None

    async def _address(self) -> tuple[str, int]:
        if hasattr(self.pool, "get_master_address"):  # a Sentinel's pool: ask them now
            host, port = await self.pool.get_master_address()
            return str(host), int(port)
        kwargs = self.pool.connection_kwargs
        return str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379))

    async def _connect(self) -> _Replies:
        # Bounded like redis-py's own connects: an unreachable host must not hold every
        # later read behind one attempt.
        async with asyncio.timeout(self.pool.connection_kwargs.get("socket_connect_timeout") or 5):
            host, port = await self._address()
            loop = asyncio.get_running_loop()
            _, replies = await loop.create_connection(_Replies, host, port)
            try:
                for command in self._handshake:
                    await self._call(replies, command)
            except BaseException as exc:
                replies.fail(ConnectionError(f"Redis refused the connection's set-up: {exc}"))
                raise
            return replies

    async def _connection(self) -> _Replies:
        replies = self._connected
        if replies is not None and replies.transport is not None:
            return replies
        if self._connecting is None:  # one attempt for every read that waits meanwhile
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            replies = await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        self._connected = replies
        return replies

    @staticmethod
    async def _call(replies: _Replies, command: Sequence[str]) -> Any:
        transport = replies.transport
        if transport is None:
            raise ConnectionError("connection to Redis closed")
        future = asyncio.get_running_loop().create_future()
        replies.waiting.append(future)
        transport.write(_pack(tuple(command)))
        try:
            return await future
        except asyncio.CancelledError:  # timed out: the connection is stuck, start afresh
            replies.fail(ConnectionError("a Redis read timed out"))
            raise

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        replies = await self._connection()
        return cast(list[bytes | None], await self._call(replies, ("MGET", *keys)))

    async def aclose(self) -> None:
        if self._connected is not None:
            self._connected.fail(ConnectionError("closed"))
            await asyncio.sleep(0)  # the transport closes its socket in the loop's next turn


class Reads:
    """Many keys' values in one round trip, with a total timeout: pipelined MGETs where the
    client talks to one server (or a Sentinel's primary), redis-py's `read_many` otherwise."""

    def __init__(self, client: AsyncClient, timeout: float | None) -> None:
        self.client, self.timeout = client, timeout
        self.pipelined = None if redis_py_only(client) else PipelinedReads(client)

    async def __call__(self, keys: Sequence[str]) -> list[bytes | None]:
        if self.pipelined is None:
            return await read_many(self.client, keys, self.timeout)
        async with asyncio.timeout(self.timeout):
            return await self.pipelined.mget(keys)

    async def aclose(self) -> None:
        if self.pipelined is not None:
            await self.pipelined.aclose()


def redis_py_only(client: AsyncClient) -> bool:
    """A cluster, TLS or a Unix socket: reads stay on redis-py."""
    if is_cluster(client):
        return True
    from redis.asyncio.connection import Connection
    from redis.asyncio.sentinel import SentinelManagedConnection

    connection_class = client.connection_pool.connection_class  # type: ignore[union-attr]
    return connection_class not in (Connection, SentinelManagedConnection)
