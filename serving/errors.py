"""One JSON error shape for every failure: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

import logging

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from fraud_core.schema import SchemaError

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


def _respond(status: int, body: ErrorBody) -> Response[ErrorResponse]:
    return Response(ErrorResponse(body), status_code=status)


def api_error_handler(_: Request, exc: ApiError) -> Response[ErrorResponse]:
    return _respond(exc.status, exc.body)


def http_error_handler(_: Request, exc: HTTPException) -> Response[ErrorResponse]:
    code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
        exc.status_code, "http_error"
    )
    return _respond(exc.status_code, ErrorBody(code, str(exc.detail)))


def internal_error_handler(_: Request, exc: Exception) -> Response[ErrorResponse]:
    log.exception("unhandled error", exc_info=exc)
    return _respond(500, ErrorBody("internal_error", "internal error; it has been logged"))
