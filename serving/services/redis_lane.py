"""The REST service's hot Redis calls (score cache L2 reads and writes, card and merchant
state reads): commands pipelined on one connection, packed and parsed by hiredis.

redis-py's asyncio client spends about 100 µs of CPU on one MGET (command packing in Python,
a pooled connection taken and given back, retry, timeout and observability layers); on this
connection an MGET costs about 20 µs, and concurrent batches' calls share it without waiting
for each other's replies (docs/benchmarks.md has the figures).

It talks to the server the redis-py client talks to: the same host, port, credentials and
database, or for a Sentinel client the primary the Sentinels name when it connects (after a
failover the broken connection fails the calls in flight and the next call connects to the
new primary). A Redis Cluster, TLS or a Unix socket keep redis-py (`redis_py_only`).

Faults raise (ConnectionError, TimeoutError, RedisReplyError), and callers answer with
defaults or skip the write as before. A call that times out closes the connection (failing
the others in flight on it): a reply that late means the server or the network is stuck, and
later calls must not queue behind it. The next call reconnects.
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


Command = Sequence[str | bytes | int]


class _Waiter:
    """A call's future and how many replies it still waits for (a call may send several
    commands at once); its result is the last reply, or the first error."""

    __slots__ = ("error", "future", "left")

    def __init__(self, future: asyncio.Future[Any], commands: int) -> None:
        self.future, self.left = future, commands
        self.error: hiredis.ReplyError | None = None


class _Replies(asyncio.Protocol):
    """Commands' replies, in the order the commands were written (RESP is ordered)."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[_Waiter] = collections.deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                waiter = self.waiting[0]
                if isinstance(reply, hiredis.ReplyError) and waiter.error is None:
                    waiter.error = reply
                waiter.left -= 1
                if waiter.left:
                    continue
                self.waiting.popleft()
                future = waiter.future
                if future.done():
                    continue  # its caller timed out and went away
                if waiter.error is not None:
                    future.set_exception(RedisReplyError(str(waiter.error)))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.fail(ConnectionError(f"unreadable reply from Redis: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"connection to Redis lost: {exc!r}" if exc else "closed"))

    def fail(self, error: Exception) -> None:
        """Close the connection; every call waiting on it raises `error`."""
        transport, self.transport = self.transport, None
        waiting, self.waiting = self.waiting, collections.deque()
        for waiter in waiting:
            if not waiter.future.done():
                waiter.future.set_exception(error)
        if transport is not None:
            transport.abort()


class Pipelined:
    """Commands to one Redis server (or a Sentinel's primary) on one pipelined connection."""

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
                    await self._call(replies, [command])
            except BaseException as exc:
                replies.fail(ConnectionError(f"Redis refused the connection's set-up: {exc}"))
                raise
            return replies

    async def _connection(self) -> _Replies:
        replies = self._connected
        if replies is not None and replies.transport is not None:
            return replies
        if self._connecting is None:  # one attempt for every call that waits meanwhile
            self._connecting = asyncio.ensure_future(self._connect())
            # Its callers may all have timed out before it fails: nobody else takes the error.
            self._connecting.add_done_callback(_take_error)
        connecting = self._connecting
        try:
            replies = await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        self._connected = replies
        return replies

    @staticmethod
    async def _call(replies: _Replies, commands: Sequence[Command]) -> Any:
        transport = replies.transport
        if transport is None:
            raise ConnectionError("connection to Redis closed")
        future = asyncio.get_running_loop().create_future()
        replies.waiting.append(_Waiter(future, len(commands)))
        transport.write(b"".join([_pack(tuple(command)) for command in commands]))
        try:
            return await future
        except asyncio.CancelledError:  # timed out: the connection is stuck, start afresh
            replies.fail(ConnectionError("a Redis call timed out"))
            raise

    async def call(self, commands: Sequence[Command]) -> Any:
        """Send `commands` at once; the last one's reply, or RedisReplyError for the first
        that failed."""
        return await self._call(await self._connection(), commands)

    async def aclose(self) -> None:
        if self._connected is not None:
            self._connected.fail(ConnectionError("closed"))
            await asyncio.sleep(0)  # the transport closes its socket in the loop's next turn


def _take_error(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class RedisLane:
    """The REST service's Redis calls, each within `timeout` seconds in all: pipelined on one
    connection where the client talks to one server (or a Sentinel's primary), through
    redis-py otherwise."""

    def __init__(self, client: AsyncClient, timeout: float | None) -> None:
        self.client, self.timeout = client, timeout
        self.pipelined = None if redis_py_only(client) else Pipelined(client)

    async def read(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys`, in order (None where missing), in one round trip."""
        if self.pipelined is None:
            return await read_many(self.client, keys, self.timeout)
        async with asyncio.timeout(self.timeout):
            return cast(list[bytes | None], await self.pipelined.call([("MGET", *keys)]))

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_ms: int) -> None:
        """SET each (key, value) with a time to live, in one round trip (on a cluster, one
        pipeline per node)."""
        async with asyncio.timeout(self.timeout):
            if self.pipelined is not None:
                await self.pipelined.call([("SET", k, v, "PX", ttl_ms) for k, v in items])
                return
            pipe = self.client.pipeline(transaction=False)
            for key, value in items:
                pipe.set(key, value, px=ttl_ms)
            await pipe.execute()

    async def aclose(self) -> None:
        if self.pipelined is not None:
            await self.pipelined.aclose()


def redis_py_only(client: AsyncClient) -> bool:
    """A cluster, TLS or a Unix socket: calls stay on redis-py."""
    if is_cluster(client):
        return True
    from redis.asyncio.connection import Connection
    from redis.asyncio.sentinel import SentinelManagedConnection

    connection_class = client.connection_pool.connection_class  # type: ignore[union-attr]
    return connection_class not in (Connection, SentinelManagedConnection)
