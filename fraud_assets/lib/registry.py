"""MLflow tracking and the model registry: where runs are logged and champions are named.

The registry alias "champion" names the published model; each registered version carries
the fraudscale bundle version as a tag, so the registry and the local model store agree on
what is served. Rolling back is pointing the alias (and the local pointer) at an older
version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fraud_core.model_store import (
    BUNDLE_VERSION_TAG,
    CHAMPION_ALIAS,
    ModelStore,
    mirror_registered,
)

BUNDLE_ARTIFACT_DIR = "bundle"


def tracking_client(uri: str, experiment: str, artifact_location: str | None) -> MlflowClient:
    """A client on the tracking store at `uri`, with `experiment` created if it is new."""
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=artifact_location)
    return client


def experiment_id(client: MlflowClient, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return str(found.experiment_id)


@dataclass(frozen=True)
class RegisteredChampion:
    registry_version: str
    bundle_version: str
    run_id: str


def register_champion(
    client: MlflowClient, name: str, run_id: str, bundle_path: Path, bundle_version: str
) -> RegisteredChampion:
    """Log the bundle to its run, register it as a new version, and point the alias at it."""
    client.log_artifact(run_id, str(bundle_path), artifact_path=BUNDLE_ARTIFACT_DIR)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    run = client.get_run(run_id)
    version = client.create_model_version(
        name,
        source=f"{run.info.artifact_uri}/{BUNDLE_ARTIFACT_DIR}",
        run_id=run_id,
        tags={BUNDLE_VERSION_TAG: bundle_version},
    )
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
    return RegisteredChampion(str(version.version), bundle_version, run_id)


def roll_back(client: MlflowClient, name: str, registry_version: str, store: ModelStore) -> Any:
    """Point the alias and the local store at an earlier registered version.

    The bundle is fetched from the registry when the local store does not have it.
    """
    version = client.get_model_version(name, registry_version)
    bundle_version = version.tags.get(BUNDLE_VERSION_TAG)
    if not bundle_version:
        raise ValueError(f"{name} version {registry_version} has no {BUNDLE_VERSION_TAG} tag")
    if bundle_version not in store.versions():
        mirror_registered(version.source, store, client.tracking_uri)
    store.load(bundle_version)  # refuses a bundle that fails validation before pointing at it
    store.point_to(bundle_version)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, registry_version)
    return RegisteredChampion(registry_version, bundle_version, version.run_id or "")
