"""API keys with scopes, and a per-key rate limit (token bucket), as a before-request hook.

Keys come from FRAUD_SERVING_API_KEYS as `key:scope+scope,key:scope` (scopes: score, infer).
With no keys configured the service is open, as on a laptop; health and metrics stay open
either way. The limit is per process: N replicas admit N times the rate.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from litestar import Request
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException

SCOPES = ("score", "infer")
ADMITTED = "fraudscale.admitted"
"""Scope key set once a request's API key has been checked and charged (serving/lane.py)."""


class RateLimited(HTTPException):
    status_code = 429


def parse_api_keys(spec: str) -> dict[str, frozenset[str]]:
    """`key:score+infer,other:score` -> {key: {score, infer}, other: {score}}."""
    keys: dict[str, frozenset[str]] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        key, _, scopes = entry.partition(":")
        wanted = frozenset(filter(None, scopes.split("+"))) or frozenset(SCOPES)
        unknown = wanted - set(SCOPES)
        if not key or unknown:
            raise ValueError(
                f"invalid API key entry (unknown scopes {sorted(unknown)})"
                if unknown
                else "empty API key"
            )
        keys[key] = wanted
    return keys


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self) -> float:
        """0 if a request may pass now, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Access:
    def __init__(
        self, keys: dict[str, frozenset[str]], header: str, rate: float, burst: float
    ) -> None:
        self.keys, self.header, self.rate, self.burst = keys, header, rate, burst
        self.header_name = header.lower().encode("latin-1")
        """The header as it appears in an ASGI scope."""
        self.buckets: dict[str, TokenBucket] = {}

    def check(self, presented: str | None, scope: str) -> None:
        if not self.keys:
            return
        if presented is None:
            raise NotAuthorizedException(f"missing {self.header} header")
        key = next((k for k in self.keys if hmac.compare_digest(k, presented)), None)
        if key is None:
            raise NotAuthorizedException("unknown API key")
        if scope not in self.keys[key]:
            raise PermissionDeniedException(f"this API key lacks the {scope!r} scope")
        if self.rate > 0:
            bucket = self.buckets.setdefault(key, TokenBucket(self.rate, self.burst))
            wait = bucket.take()
            if wait > 0:
                raise RateLimited(
                    detail=f"rate limit of {self.rate:g}/s exceeded",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )


def require(scope: str) -> Callable[[Request], Awaitable[None]]:
    """A `before_request` hook admitting requests whose API key has `scope`, within its rate
    limit (raises 401/403/429).

    A hook rather than a Litestar guard: Litestar copies the route handler for every guard
    call, and runs a synchronous guard in a worker thread: far more work than the check."""

    async def check(request: Request) -> None:
        if request.scope.get(ADMITTED):
            return
        access: Access = request.app.state.services.access
        access.check(request.headers.get(access.header), scope)

    return check
