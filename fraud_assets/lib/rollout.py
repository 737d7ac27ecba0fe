"""Moving models between roles: publish a candidate (challenger in shadow, or canary), start
and end a canary, promote, abort. The Dagster rollout jobs and `fraudscale-models` call these.

Every step changes the local store's pointers and the registry's aliases together (servers
follow one or the other, as configured) and is recorded as an MLflow run of the experiment
`<experiment>-rollout`: action, role, bundle and registry versions, share, reason. A
candidate must match the champion's features and label delay, as the servers would refuse it
otherwise.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fraud_assets.lib.registry import BUNDLE_ARTIFACT_DIR
from fraud_core.bundle import BundleError, ModelBundle, validate_bundle, write_bundle
from fraud_core.model_store import BUNDLE_VERSION_TAG, CANARY_SHARE_TAG, ModelStore
from fraud_core.rollout import CANARY, CHALLENGER, CHAMPION, RolloutPlan

CANDIDATE_ROLES = (CHALLENGER, CANARY)


@dataclass(frozen=True)
class Rollout:
    """The store, and the registry when one is configured (None: the store alone)."""

    store: ModelStore
    client: MlflowClient | None
    model_name: str
    experiment: str = "fraudscale"

    def plan(self) -> RolloutPlan:
        return self.store.plan()

    def publish(
        self, bundle: ModelBundle, role: str, *, share: float = 0.0, reason: str = ""
    ) -> str:
        """Add a candidate to the store and the registry and give it `role` (challenger: shadow
        scoring on every path; canary: `share` of the cards)."""
        if role not in CANDIDATE_ROLES:
            raise ValueError(f"a candidate is published as one of {CANDIDATE_ROLES}, not {role!r}")
        self._check_against_champion(bundle)
        version = bundle.metadata.version
        self.store.add(bundle)
        registry_version = self._register(bundle)
        self._assign(version, registry_version, role, share)
        self._record("publish", role, version, registry_version, share, reason)
        return version

    def start_canary(self, version: str, share: float, reason: str = "") -> None:
        """Give a stored version (a challenger seen in shadow, say) `share` of the cards."""
        self._check_against_champion(self.store.load(version))
        registry_version = self._register(self.store.load(version))
        self._assign(version, registry_version, CANARY, share)
        self._record("start_canary", CANARY, version, registry_version, share, reason)

    def end(self, role: str, action: str = "end", reason: str = "") -> str | None:
        """Empty a role (a canary ended or aborted, a challenger withdrawn); the champion
        answers every card again."""
        version = getattr(self.plan(), role)
        self.store.clear(role)
        if self.client is not None:
            try:
                self.client.delete_registered_model_alias(self.model_name, role)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
        self._record(action, role, version or "", "", 0.0, reason)
        return version

    def abort(self, role: str = CANARY, reason: str = "") -> str | None:
        return self.end(role, "abort", reason)

    def promote(self, role: str = CANARY, reason: str = "") -> str:
        """Make the canary (or the challenger) champion and empty its role."""
        version = getattr(self.plan(), role)
        if not version:
            raise ValueError(f"no {role} to promote")
        registry_version = self._register(self.store.load(version))
        self.store.point_to(version, CHAMPION)
        if self.client is not None:
            self.client.set_registered_model_alias(self.model_name, CHAMPION, registry_version)
        self.end(role, "promoted", reason)
        self._record("promote", role, version, registry_version, 0.0, reason)
        return version

    def _check_against_champion(self, bundle: ModelBundle) -> None:
        champion = self.plan().champion
        if champion is None:
            raise BundleError("no champion is published: publish one before a candidate")
        delay = self.store.load(champion).metadata.contract.label_delay_us
        validate_bundle(bundle, label_delay_us=delay)

    def _assign(self, version: str, registry_version: str, role: str, share: float) -> None:
        self.store.point_to(version, role, share=share)
        if self.client is None:
            return
        if role == CANARY:
            self.client.set_model_version_tag(
                self.model_name, registry_version, CANARY_SHARE_TAG, repr(share)
            )
        self.client.set_registered_model_alias(self.model_name, role, registry_version)

    def _register(self, bundle: ModelBundle) -> str:
        """The registry version holding `bundle` (registered now if it is not yet)."""
        client = self.client
        if client is None:
            return ""
        version = bundle.metadata.version
        try:
            client.create_registered_model(self.model_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        for found in client.search_model_versions(f"name='{self.model_name}'"):
            if found.tags.get(BUNDLE_VERSION_TAG) == version:
                return str(found.version)
        run = self.start_run("register", {"bundle_version": version})
        with tempfile.TemporaryDirectory() as folder:
            path = write_bundle(bundle, Path(folder) / "model.onnx")
            client.log_artifact(run, str(path), artifact_path=BUNDLE_ARTIFACT_DIR)
        client.set_terminated(run)
        registered = client.create_model_version(
            self.model_name,
            source=f"{client.get_run(run).info.artifact_uri}/{BUNDLE_ARTIFACT_DIR}",
            run_id=run,
            tags={BUNDLE_VERSION_TAG: version},
        )
        return str(registered.version)

    def _record(
        self,
        action: str,
        role: str,
        version: str,
        registry_version: str,
        share: float,
        reason: str,
    ) -> None:
        if self.client is None:
            return
        params: dict[str, Any] = {
            "action": action,
            "role": role,
            "bundle_version": version,
            "registry_version": registry_version,
            "share": share,
            "reason": reason[:500],
        }
        self.client.set_terminated(self.start_run(action, params))

    def start_run(self, name: str, params: dict[str, Any]) -> str:
        """A new run of the experiment `<experiment>-rollout` with `params`; its id."""
        assert self.client is not None
        experiment = f"{self.experiment}-rollout"
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        run = self.client.create_run(experiment_id, run_name=name, tags={"fraudscale": "rollout"})
        for key, value in params.items():
            self.client.log_param(run.info.run_id, key, value)
        return str(run.info.run_id)
