"""Serving follows the MLflow registry alias when a tracking URI is configured (real store)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from litestar.testing import TestClient
from mlflow import MlflowClient

from fraud_assets.lib.registry import register_champion
from fraud_core.bundle import write_bundle
from fraud_core.model_store import CHAMPION_ALIAS
from fraud_devtools.processes import wait_until
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SAMPLE_TRANSACTION
from tests.serving.test_app import versioned

pytestmark = pytest.mark.integration

NAME = "fraudscale-fraud"


def test_the_served_model_follows_the_champion_alias(tmp_path: Path, trained) -> None:  # type: ignore[no-untyped-def]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())

    def register(version: str) -> None:
        bundle = versioned(trained.bundle, version)
        path = write_bundle(bundle, tmp_path / "bundles" / version / "model.onnx")
        run = client.create_run(experiment).info.run_id
        register_champion(client, NAME, run, path, version)

    register("v1")
    settings = ServingSettings(
        model_store_dir=str(tmp_path / "mirror"), mlflow_tracking_uri=uri, mlflow_model_name=NAME,
        model_poll_seconds=0.05, cache_enabled=False,
    )  # fmt: skip
    payload = msgspec.json.encode(SAMPLE_TRANSACTION)
    with TestClient(create_app(settings)) as rest:

        def served() -> str:
            return str(rest.post("/v1/score", content=payload).json()["model_version"])

        assert rest.get("/v2/health/ready").status_code == 200
        assert served() == "v1"
        register("v2")  # a new publication moves the alias
        wait_until(lambda: served() == "v2", "v2 served", 20)
        client.set_registered_model_alias(NAME, CHAMPION_ALIAS, "1")  # a rollback
        wait_until(lambda: served() == "v1", "v1 served again", 20)
    # The local store holds the mirrored bundles; its own pointer was never used.
    assert sorted(p.name for p in (tmp_path / "mirror" / "versions").iterdir()) == ["v1", "v2"]
    assert not (tmp_path / "mirror" / "CHAMPION").exists()
