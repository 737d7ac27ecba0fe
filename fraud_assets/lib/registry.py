"""MLflow tracking and the model registry: where runs are logged and champions are named.

The registry alias "champion" names the published model; each registered version carries
the fraudscale bundle version as a tag, so the registry and the local model store agree on
what is served. Rolling back is pointing the alias (and the local pointer) at an older
version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fraud_core.model_store import (
    BUNDLE_VERSION_TAG,
    CHAMPION_ALIAS,
    ModelStore,
    mirror_registered,
)

if TYPE_CHECKING:
    from fraud_assets.defs.resources import MlflowResource

BUNDLE_ARTIFACT_DIR = "bundle"


def tracking_client(resource: MlflowResource) -> MlflowClient:
    """A client on the configured store, with the experiment created if it is new."""
    uri = resource.resolved_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(resource.experiment) is None:
        location = None
        if not resource.tracking_uri:  # a local store keeps artifacts beside its database
            location = (Path(resource.local_dir).resolve() / "artifacts").as_uri()
        client.create_experiment(resource.experiment, artifact_location=location)
    return client


def experiment_id(client: MlflowClient, resource: MlflowResource) -> str:
    experiment = client.get_experiment_by_name(resource.experiment)
    assert experiment is not None
    return str(experiment.experiment_id)


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


def current_champion(client: MlflowClient, name: str) -> RegisteredChampion | None:
    try:
        version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None
    return RegisteredChampion(
        str(version.version), version.tags.get(BUNDLE_VERSION_TAG, ""), version.run_id or ""
    )


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
