"""One JSON error shape for every failure: {"error": {"code", "message", "field"}}.

Under /v2/models the Open Inference Protocol fixes `error` as a string, so there the shape is
{"error": message, "code", "field"} and protocol clients keep working unchanged.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from fraud_core.schema import SchemaError, decode_json

T = TypeVar("T")

log = logging.getLogger(__name__)


class ErrorBody(msgspec.Struct, frozen=True):
    code: str
    """Machine-readable: invalid_field, malformed_json, model_not_ready, too_many, ..."""
    message: str
    field: str = ""
    """The offending field's path (e.g. transactions[2].amount), when one is to blame."""


class ErrorResponse(msgspec.Struct, frozen=True):
    error: ErrorBody


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status, self.body = status, ErrorBody(code, message, field)

    @classmethod
    def from_schema(cls, exc: SchemaError) -> ApiError:
        if exc.malformed:
            return cls(400, "malformed_json", exc.reason)
        return cls(422, "invalid_field", exc.reason, exc.field)


def decode_body(body: bytes, kind: type[T]) -> T:
    """A request body decoded and validated as `kind`; a 4xx ApiError naming the field."""
    try:
        return decode_json(body, kind)
    except SchemaError as exc:
        raise ApiError.from_schema(exc) from None


class ProtocolError(msgspec.Struct, frozen=True):
    """The Open Inference Protocol's error shape: `error` is a string there, and clients such
    as tritonclient read it as one; our code and field ride alongside."""

    error: str
    code: str
    field: str = ""


def _respond(request: Request, status: int, body: ErrorBody) -> Response[Any]:
    if request.url.path.startswith("/v2/models"):
        return Response(ProtocolError(body.message, body.code, body.field), status_code=status)
    return Response(ErrorResponse(body), status_code=status)


def api_error_handler(request: Request, exc: ApiError) -> Response[Any]:
    return _respond(request, exc.status, exc.body)


def http_error_handler(request: Request, exc: HTTPException) -> Response[Any]:
    code = {
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "too_large",
        429: "rate_limited",
    }.get(exc.status_code, "http_error")
    response = _respond(request, exc.status_code, ErrorBody(code, str(exc.detail)))
    response.headers.update(exc.headers or {})
    return response


def internal_error_handler(request: Request, exc: Exception) -> Response[Any]:
    log.exception("unhandled error", exc_info=exc)
    body = ErrorBody("internal_error", "internal error; it has been logged")
    return _respond(request, 500, body)
