"""The OpenAPI document: request bodies, and every error a route answers, as it answers it.

`/v1/score`, `/v1/score/batch` and V2 infer decode their bodies with msgspec (our error
shape, and the fast lanes), so Litestar sees no `data` parameter to describe. Their schemas
are msgspec's JSON Schema of the very types the routes decode, written inline (Litestar
replaces configured component schemas with the ones it generates).

Errors are documented per route with the one body the service sends for them
(`serving.errors`): `{"error": {code, message, field}}`, or the Open Inference Protocol's
`{"error": message, code, field}` under /v2/models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)

from serving.errors import ErrorResponse, ProtocolError

ERRORS = {
    400: "The body is not JSON (code malformed_json).",
    401: "No API key, or one the service does not know (unauthorized).",
    403: "The API key lacks this route's scope (forbidden).",
    404: "No model of that name is served (unknown_model).",
    413: "The body is larger than FRAUD_SERVING_MAX_BODY_BYTES (too_large).",
    415: "The body is not declared as JSON (unsupported_media_type).",
    422: "A field is missing or invalid; `field` names it (invalid_field, too_many).",
    429: "Over the API key's rate limit; Retry-After says when to retry (rate_limited).",
    503: "No valid model is loaded yet (model_not_ready).",
}
"""Every error status the service answers on some route, and what it means."""


def inline_schema(kind: type[Any]) -> dict[str, Any]:
    """The JSON Schema of `kind` with every reference replaced by what it refers to."""
    (root,), definitions = msgspec.json.schema_components([kind], ref_template="{name}")

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return cast(dict[str, Any], resolve(root))


def with_body(kind: type[Any]) -> type[Operation]:
    """An Operation class whose JSON request body is `kind`."""
    schema = cast(Schema, inline_schema(kind))  # Litestar renders a mapping as it is

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={"application/json": OpenAPIMediaType(schema=schema)}, required=True
            )

    return WithBody


def error_responses(*statuses: int, protocol: bool = False) -> dict[int, ResponseSpec]:
    """The documented answers for `statuses`, with the error body the route sends."""
    body = ProtocolError if protocol else ErrorResponse
    return {
        status: ResponseSpec(data_container=body, description=ERRORS[status],
                             generate_examples=False)
        for status in statuses
    }  # fmt: skip


def document_settings(
    schema: OpenAPI, *, max_batch_transactions: int, api_key_header: str, keys: bool
) -> None:
    """What the settings decide in the generated document: the batch limit, and the API key
    on the routes that check one (only when keys are configured: an open service answers
    without one)."""
    batch = schema.paths["/v1/score/batch"].post if schema.paths else None
    if batch is not None and batch.request_body is not None:
        body = cast(RequestBody, batch.request_body).content["application/json"].schema
        cast(dict[str, Any], body)["properties"]["transactions"]["maxItems"] = (
            max_batch_transactions
        )
    if not keys:
        return
    components = schema.components
    components.security_schemes = {
        "apiKey": SecurityScheme(
            type="apiKey", name=api_key_header, security_scheme_in="header",
            description="An API key with the route's scope (score, infer).",
        )
    }  # fmt: skip
    for path, item in (schema.paths or {}).items():
        if path.startswith(("/v1/score", "/v2")) and not path.startswith("/v2/health"):
            for operation in (item.get, item.post):
                if operation is not None:
                    operation.security = [{"apiKey": []}]
