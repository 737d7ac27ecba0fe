"""Open Inference Protocol v2 with the real tritonclient against a real uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from fraud_core.features import N_FEATURES
from fraud_core.inference import Scorer
from fraud_core.model_store import ModelStore
from fraud_devtools.rest_server import running_server
from serving.app import create_app
from serving.settings import ServingSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained) -> Iterator[str]:  # type: ignore[no-untyped-def]
    store = ModelStore(Path(tmp_path_factory.mktemp("models")))
    store.publish(trained.bundle)
    with running_server(create_app(ServingSettings(model_store_dir=str(store.root)))) as url:
        yield url


def test_tritonclient_round_trip(server: str, trained, reference_features: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    import tritonclient.http as http

    client = http.InferenceServerClient(url=server)
    name = trained.bundle.metadata.name
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(name)
    metadata = client.get_model_metadata(name)
    assert metadata["versions"] == [trained.bundle.metadata.version]
    assert metadata["inputs"][0]["shape"] == [-1, N_FEATURES]
    rows = reference_features[:64]
    tensor = http.InferInput("features", list(rows.shape), "FP32")
    expected = Scorer(trained.bundle).score(rows)
    for binary in (True, False):  # the binary-data extension (tritonclient's default) and JSON
        tensor.set_data_from_numpy(rows, binary_data=binary)
        result = client.infer(name, [tensor], request_id="r-1")
        np.testing.assert_array_equal(result.as_numpy("probability"), expected)
        assert result.get_response()["id"] == "r-1"
    with pytest.raises(http.InferenceServerException, match="no model named"):
        client.infer("nope", [tensor])


def infer_body(**tensor: object) -> dict[str, object]:
    """A valid one-row infer request, with the tensor's fields replaced by `tensor`."""
    valid = {"name": "features", "shape": [1, N_FEATURES], "datatype": "FP32",
             "data": [0.0] * N_FEATURES}  # fmt: skip
    return {"inputs": [{**valid, **tensor}]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (infer_body(shape=[1, 3], data=[1, 2, 3]), "inputs[0].shape[1]"),
        (infer_body(shape=[2, N_FEATURES]), "inputs[0].data"),
        (infer_body(datatype="INT64", data=[0] * N_FEATURES), "inputs[0].datatype"),
        (infer_body(name="x"), "inputs[0].name"),
        (infer_body(data=["a"] * N_FEATURES), "inputs[0].data[0]"),
        ({"outputs": []}, "inputs"),
    ],
)
def test_wrong_tensors_get_a_4xx_naming_the_field(
    server: str, trained, body: dict, field: str
) -> None:  # type: ignore[no-untyped-def, type-arg]
    import httpx

    name = trained.bundle.metadata.name
    response = httpx.post(
        f"http://{server}/v2/models/{name}/infer", content=msgspec.json.encode(body)
    )
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert response.json()["error"]


def test_unknown_model_is_a_404(server: str) -> None:
    import httpx

    response = httpx.get(f"http://{server}/v2/models/nope/ready")
    assert (response.status_code, response.json()["code"]) == (404, "unknown_model")
