"""uvicorn's HTTP/1.1 protocol (httptools), answering with one write a response.

uvicorn writes a response's status line and headers when the app sends `http.response.start`
and its body when the app sends `http.response.body`: two `write(2)` calls, two TCP segments.
Each write pays the kernel's whole send path (on loopback the receiver's too), and in a
full-path scoring request uvicorn's `send` was 14 % of the server's CPU (py-spy,
docs/benchmarks.md). `OneWriteCycle` keeps the head until the body's first write and writes
the two together; a response whose body is one message (every response of this service but
a streamed one) costs one write. The bytes on the wire are uvicorn's, unchanged
(tests/serving/test_server.py).

`OneWriteCycle` leans on uvicorn's internals (the module's name for its cycle class, the
cycle's `transport`, `response_started` and `response_complete`), so it serves only on the
uvicorn releases the test was run on (`TESTED_UVICORN`); on any other release the service
runs uvicorn's own protocol and says so once in its log: two writes a response, the same
bytes.

`server_options()` are the uvicorn settings the service runs with (`python -m serving.app`
and the tests' server alike).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import uvicorn
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = logging.getLogger(__name__)
TESTED_UVICORN = frozenset({(0, 54)})
"""uvicorn releases (major, minor) that tests/serving/test_server.py passed on with
`OneWriteCycle`; add one only after running that test on it."""


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request-response cycle whose response head waits for the body's first write.

    From `http.response.start` until the head is out, the cycle stands in for the
    connection's transport (`write`, `close`): uvicorn's first write (the head) is kept and
    goes out with the next one, or before the connection closes, or alone when the response
    completes without another write (HEAD, 304). A `100 Continue`, written before the
    response starts, and everything after the head go straight to the transport."""

    _head: bytes | None = None
    """None until uvicorn writes the head; the head while it waits; b"" once it is out."""
    _connection: asyncio.Transport

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            self._connection, self.transport = self.transport, self  # type: ignore[assignment]
        await super().send(message)
        if self.transport is self and self._head is not None:
            if self._head and self.response_complete:
                self.write(b"")  # a response without a body write
            if not self._head:
                self.transport = self._connection

    def write(self, data: bytes) -> None:
        head = self._head
        if head is None:
            self._head = data
        else:
            self._head = b""
            self._connection.write(head + data if head else data)

    def close(self) -> None:
        if self._head:
            self.write(b"")
        self._connection.close()


class OneWriteHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with `OneWriteCycle`s (pass as uvicorn's `http`)."""

    def on_headers_complete(self) -> None:
        # uvicorn makes each request's cycle here, by its module's name for the class: the
        # name stands for `OneWriteCycle` during the call (a server in another thread that
        # makes a cycle meanwhile gets one too: the same bytes, one write fewer).
        httptools_impl.RequestResponseCycle = OneWriteCycle  # type: ignore[misc]
        try:
            super().on_headers_complete()
        finally:
            httptools_impl.RequestResponseCycle = RequestResponseCycle  # type: ignore[misc]


@functools.cache
def http_protocol(version: str = uvicorn.__version__) -> type[HttpToolsProtocol] | str:
    """`OneWriteHttpTools` on a tested uvicorn release; uvicorn's own httptools protocol
    ("httptools") on any other, with a warning."""
    release = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if release in TESTED_UVICORN:
        return OneWriteHttpTools
    log.warning(
        "uvicorn %s: the one-write protocol is tested on %s only; serving with uvicorn's "
        "own (a response in two writes)", version,
        ", ".join(f"{major}.{minor}" for major, minor in sorted(TESTED_UVICORN)),
    )  # fmt: skip
    return "httptools"


def server_options() -> dict[str, Any]:
    """uvicorn settings of the service: one write a response (`http_protocol`); no access
    log (requests are counted in /metrics and traced; a log line each costs 10 %+); no
    `server` header (it names the server's software to every client and costs each
    response); no proxy-headers middleware (it rewrites the client address from
    X-Forwarded-For, and nothing here reads that address: rate limits go by API key; ~1 % of
    a request's CPU)."""
    return {
        "http": http_protocol(),
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
    }
