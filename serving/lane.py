"""Fast lanes for the hot POST routes (/v1/score, /v2/models/{name}/infer): a request that
will succeed is answered in front of Litestar (`WithFastLanes`), without its per-request
machinery (exception middleware, router, request and response objects).

Litestar's handling of a scoring request (request object, before-request hook, signature
parsing, response object, response rendering) costs more CPU than the features and the model
together (docs/benchmarks.md has the figures). A lane makes the same API-key check and calls
the same `Answer` function as the route's handler, then encodes the result with msgspec, as
Litestar does, and answers 200 itself.

Everything else goes on to the Litestar handler, with the body handed over unread or
replayed: no or bad key, rate limit, a body without Content-Length or over the size limit,
a body that does not decode, no model. So every error keeps its one shape and status, and
the handler stays the reference the lane must agree with (tests/serving compare them).
A key admitted here is marked in the scope, so the handler's hook neither checks it again
nor takes a second token from its rate limit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from litestar import Litestar
from litestar.exceptions import HTTPException
from litestar.types import (
    ASGIApp,
    HTTPResponseStartEvent,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)
from msgspec import json

from fraud_core.schema import SchemaError
from serving.auth import ADMITTED, Access
from serving.deps import services_of
from serving.errors import ApiError

_encode = json.Encoder().encode
_JSON = (b"content-type", b"application/json")


def header(scope: Scope, name: bytes) -> bytes | None:
    """A request header's raw value (`name` in lower case), without building a Headers."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _body(receive: Receive, limit: int) -> tuple[bytes, list[ReceiveMessage]]:
    """The whole body (at most `limit` bytes) and the messages it came in, to replay."""
    messages: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break  # the client went away: the handler will see it too
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit or not message.get("more_body", False):
            break
    return b"".join(chunks), messages


def require_media_type(scope: Scope, *also: str) -> None:
    """ApiError 415 unless the body is declared as JSON (application/json or */*+json) or as
    one of `also`. A body without a Content-Type is read as JSON."""
    declared = header(scope, b"content-type")
    if declared is None:
        return
    media_type = declared.decode("latin-1").split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json") or media_type in also:
        return
    raise ApiError(
        415, "unsupported_media_type", f"{media_type!r} is not JSON: send application/json"
    )


Answer = Callable[[Scope, bytes], Awaitable[Any]]
"""A route's work from its scope and whole body to what it answers with 200; raises
ApiError, SchemaError or HTTPException for anything else. The route's Litestar handler
calls the same function."""


class FastLane(NamedTuple):
    """A POST route answered in front of Litestar's router when the request succeeds."""

    path: re.Pattern[str]
    """The route's whole path; named groups are its path parameters."""
    route: str
    """The route handler's name: the metrics' route label."""
    api_scope: str
    """What the API key must allow."""
    answer: Answer


class WithFastLanes(Litestar):
    """Litestar with fast lanes in front of its router: a POST whose path is a lane's goes to
    the lane, which hands what it does not answer to Litestar (`super().__call__`), where the
    route's handler answers it. Lane answers are counted and timed like the handler's."""

    fast_lanes: Sequence[FastLane] = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == "http" and scope.get("method") == "POST":
            for lane in self.fast_lanes:
                match = lane.path.fullmatch(scope["path"])
                if match is not None:
                    scope["app"] = scope["litestar_app"] = self
                    scope["path_params"] = match.groupdict()
                    await _run(lane, scope, receive, send, super().__call__)
                    return
        await super().__call__(scope, receive, send)


async def _run(lane: FastLane, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
    started = time.perf_counter()
    services = services_of(scope["litestar_app"])
    limit: int = services.settings.max_body_bytes
    length = header(scope, b"content-length")
    if length is None or not length.isdigit() or int(length) > limit:
        await app(scope, receive, send)  # chunked or too large: Litestar answers
        return
    body, messages = await _body(receive, limit)
    try:
        access: Access = services.access
        api_key = header(scope, access.header_name)
        access.check(api_key.decode("latin-1") if api_key is not None else None, lane.api_scope)
        scope[ADMITTED] = True  # type: ignore[literal-required]
        payload = _encode(await lane.answer(scope, body))
    except (HTTPException, ApiError, SchemaError):
        replay = iter(messages)

        async def replayed() -> ReceiveMessage:
            return next(replay, None) or await receive()

        await app(scope, replayed, send)
        return
    start: HTTPResponseStartEvent = {
        "type": "http.response.start", "status": 200,
        "headers": [_JSON, (b"content-length", str(len(payload)).encode())],
    }  # fmt: skip
    await send(start)
    await send({"type": "http.response.body", "body": payload, "more_body": False})
    requests, latency = services.metrics.for_route(lane.route, 200)
    requests.inc()
    latency.observe(time.perf_counter() - started)
