"""Open Inference Protocol v2 (KServe / Triton): model metadata, readiness and infer."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, get_args

import msgspec
import numpy as np
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.types import Scope

from fraud_core.features import FEATURE_NAMES, N_FEATURES
from fraud_core.inference import Scorer
from serving.auth import require
from serving.deps import Services, services_of
from serving.errors import ApiError, decode_body
from serving.lane import FastLane, header, require_media_type
from serving.openapi import error_responses, with_body
from serving.services.scoring import served_models

InputName = Literal["features"]
INPUT_NAME: str = get_args(InputName)[0]
OUTPUT_NAME = "probability"
FP32_MAX = float(np.finfo(np.float32).max)


class InferInput(msgspec.Struct, frozen=True):
    """The one input tensor: FP32 [n, features], row-major, in the contract's feature order."""

    name: InputName
    shape: tuple[
        Annotated[int, msgspec.Meta(ge=1)],
        Annotated[int, msgspec.Meta(ge=N_FEATURES, le=N_FEATURES)],
    ]
    datatype: Literal["FP32"]
    data: list[Annotated[float, msgspec.Meta(ge=-FP32_MAX, le=FP32_MAX)]] = []
    """n x features numbers (row-major), or none with the binary tensor extension."""
    parameters: dict[str, Any] = {}


class InferRequest(msgspec.Struct, frozen=True):
    inputs: Annotated[list[InferInput], msgspec.Meta(min_length=1, max_length=1)]
    id: str | None = None
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] = {}


def _model(services: Services, name: str) -> Scorer:
    scorer = served_models(services.models).champion
    if name != scorer.metadata.name:
        raise ApiError(
            404,
            "unknown_model",
            f"no model named {name!r}; serving {scorer.metadata.name!r}",
            "model",
        )
    return scorer


MODEL_ERRORS = error_responses(400, 401, 403, 404, 429, 503, protocol=True)
"""400 never happens on these routes (their one parameter is a string), but Litestar
documents one for any route with parameters: this says what the body would be."""

BINARY_HEADER = b"inference-header-content-length"


def _decode(scope: Scope, body: bytes) -> tuple[InferRequest, bytes]:
    """The JSON request, and the binary tensor data after it (binary-data extension)."""
    binary_at = header(scope, BINARY_HEADER)
    if binary_at is None:
        return decode_body(body, InferRequest), b""
    try:
        length = int(binary_at)
    except ValueError:
        raise ApiError(400, "malformed_json", f"{BINARY_HEADER!r} is not a number") from None
    if not 0 < length <= len(body):
        raise ApiError(400, "malformed_json", f"{BINARY_HEADER!r} {length} exceeds the body")
    return decode_body(body[:length], InferRequest), body[length:]


def _features(request: InferRequest, binary: bytes = b"") -> np.ndarray:
    (tensor,) = request.inputs  # name, datatype and shape are checked by the schema
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if size != len(binary) or size % 4:
            raise ApiError(
                422,
                "invalid_field",
                f"binary_data_size {size} for {len(binary)} bytes",
                "inputs[0].parameters",
            )
        values = np.frombuffer(binary, dtype="<f4")
    else:
        try:
            values = np.asarray(tensor.data, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            raise ApiError(422, "invalid_field", "data must be numbers", "inputs[0].data") from None
    if values.size != math.prod(tensor.shape):
        raise ApiError(
            422, "invalid_field", f"{values.size} values for shape {tensor.shape}", "inputs[0].data"
        )
    if not np.isfinite(values).all():
        raise ApiError(422, "invalid_field", "data has NaN or infinite values", "inputs[0].data")
    return values.reshape(tensor.shape)


async def answer_infer(scope: Scope, body: bytes) -> dict[str, Any]:
    """POST /v2/models/{name}/infer's answer (its handler and its fast lane)."""
    require_media_type(scope, "application/octet-stream")  # the binary tensor extension
    services = services_of(scope["litestar_app"])
    scorer = _model(services, scope["path_params"]["model_name"])
    request, binary = _decode(scope, body)
    scores = await services.rows.score(scorer, _features(request, binary))
    response: dict[str, Any] = {
        "model_name": scorer.metadata.name,
        "model_version": scorer.version,
        "outputs": [
            {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [len(scores)],
             "data": scores.tolist()}
        ],
    }  # fmt: skip
    if request.id is not None:
        response["id"] = request.id
    return response


INFER_LANE = FastLane(
    re.compile("/v2/models/(?P<model_name>[^/]+)/infer"), "infer", "infer", answer_infer
)


class InferenceController(Controller):
    path = "/v2"
    before_request = require("infer")  # type: ignore[assignment]  # a function, not a method
    tags = ["open inference protocol"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @get(
        "/", operation_id="server_metadata", name="server_metadata",
        responses=error_responses(401, 403, 429),
    )  # fmt: skip
    async def server_metadata(self) -> dict[str, Any]:
        """Server name, version and protocol extensions."""
        return {"name": "fraudscale", "version": "0.1.0", "extensions": []}

    @get(
        "/models/{model_name:str}", operation_id="model_metadata", name="model_metadata",
        responses=MODEL_ERRORS,
    )  # fmt: skip
    async def model_metadata(
        self, model_name: FromPath[str], services: NamedDependency[Services]
    ) -> dict[str, Any]:
        """The model's version and its tensors: features in the contract's order."""
        scorer = _model(services, model_name)
        return {
            "name": scorer.metadata.name,
            "versions": [scorer.version],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, N_FEATURES]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1]}],
            "parameters": {"feature_names": list(FEATURE_NAMES), "threshold": scorer.threshold},
        }

    @get(
        "/models/{model_name:str}/ready", operation_id="model_ready", name="model_ready",
        responses=MODEL_ERRORS,
    )  # fmt: skip
    async def model_ready(
        self, model_name: FromPath[str], services: NamedDependency[Services]
    ) -> Response[dict[str, Any]]:
        """200 while this model is loaded and serving."""
        scorer = _model(services, model_name)
        return Response({"name": scorer.metadata.name, "ready": True})

    @post(
        "/models/{model_name:str}/infer", operation_id="infer", name="infer", status_code=200,
        operation_class=with_body(InferRequest),
        responses=error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503, protocol=True),
    )  # fmt: skip
    async def infer(self, request: Request) -> dict[str, Any]:
        """Fraud probability for each row of an FP32 [n, features] tensor."""
        return await answer_infer(request.scope, await request.body())
