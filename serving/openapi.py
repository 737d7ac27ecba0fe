"""Request bodies in the OpenAPI document for the routes that read their body themselves.

`/v1/score`, `/v1/score/batch` and V2 infer decode their bodies with msgspec (our error
shape, and the fast lanes), so Litestar sees no `data` parameter to describe. Their schemas
are msgspec's JSON Schema of the very types the routes decode, written inline (Litestar
replaces configured component schemas with the ones it generates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema


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
