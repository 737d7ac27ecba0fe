"""Component settings from environment variables: one msgspec Struct per component, one prefix."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


def settings_from_env(cls: type[S], prefix: str, environ: Mapping[str, str] | None = None) -> S:
    """`cls`'s defaults overridden by <prefix><FIELD> variables, converted to the field types."""
    env = os.environ if environ is None else environ
    values = {
        field: env[prefix + field.upper()]
        for field in cls.__struct_fields__
        if prefix + field.upper() in env
    }
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid {prefix}* setting: {exc}") from None
