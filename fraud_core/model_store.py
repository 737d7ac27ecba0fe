"""The local model store: published bundles by version, and an atomically replaced pointer
per role; and the registry's aliases as the other place roles can be named.

    <root>/versions/<version>/model.onnx   one file per published bundle, never rewritten
    <root>/CHAMPION                         the version to serve (replaced with os.replace)
    <root>/CANARY                           "<version> <share>": answers that share of cards
    <root>/CHALLENGER                       the version scoring in shadow

Readers (the REST service, the stream workers) resolve the pointers and load those versions'
files; a publisher writes the new version's file first and then swaps a pointer, so a reader
sees the old models or the new ones, never a mixture. Rolling back is pointing at an older
version.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fraud_core.bundle import BundleError, ModelBundle, read_bundle, validate_bundle, write_bundle
from fraud_core.inference import Scorer
from fraud_core.rollout import CANARY, CHALLENGER, CHAMPION, SHADOW, RolloutPlan, in_canary

log = logging.getLogger(__name__)

POINTERS = {CHAMPION: "CHAMPION", CANARY: "CANARY", CHALLENGER: "CHALLENGER"}
"""The pointer file of each role in the store's root."""
POINTER = POINTERS[CHAMPION]
_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CHAMPION_ALIAS = CHAMPION
"""The MLflow registry alias of the published model (the other roles' aliases are their
names: "canary", "challenger")."""
BUNDLE_VERSION_TAG = "bundle_version"
"""Tag on each registered version: the fraudscale bundle version it holds."""
CANARY_SHARE_TAG = "canary_share"
"""Tag on the registered version the "canary" alias names: its share of cards."""


class ModelStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _bundle_path(self, version: str) -> Path:
        if not _VERSION.match(version):
            raise BundleError(f"invalid model version {version!r}")
        return self.root / "versions" / version / "model.onnx"

    def add(self, bundle: ModelBundle) -> Path:
        """Store a bundle under its version, without making it the champion."""
        return write_bundle(bundle, self._bundle_path(bundle.metadata.version))

    def publish(self, bundle: ModelBundle) -> Path:
        """Store a bundle and make it the champion."""
        path = self.add(bundle)
        self.point_to(bundle.metadata.version)
        return path

    def point_to(self, version: str, role: str = CHAMPION, *, share: float = 0.0) -> None:
        """Make a stored version serve in `role` (for the champion, also how a rollback is
        done); a canary answers `share` of the cards."""
        if not self._bundle_path(version).exists():
            raise BundleError(f"model version {version!r} is not in the store at {self.root}")
        if role == CANARY and not 0.0 < share <= 1.0:
            raise ValueError(f"a canary's share must be in (0, 1], not {share}")
        text = f"{version} {share!r}" if role == CANARY else version
        self._write_pointer(POINTERS[role], text)

    def clear(self, role: str) -> None:
        """Leave a role empty (the champion's cannot be cleared, only moved)."""
        if role == CHAMPION:
            raise ValueError("the champion can be replaced, not removed")
        with contextlib.suppress(FileNotFoundError):
            (self.root / POINTERS[role]).unlink()

    def _write_pointer(self, name: str, text: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.")
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / name)

    def _read_pointer(self, role: str) -> str | None:
        try:
            return (self.root / POINTERS[role]).read_text().strip() or None
        except FileNotFoundError:
            return None

    def champion_version(self) -> str | None:
        return self._read_pointer(CHAMPION)

    def plan(self) -> RolloutPlan:
        """What each role serves now."""
        canary, share = None, 0.0
        text = self._read_pointer(CANARY)
        if text:
            canary, _, share_text = text.partition(" ")
            share = float(share_text or 0.0)
        return RolloutPlan(
            champion=self.champion_version(),
            canary=canary,
            canary_share=share,
            challenger=self._read_pointer(CHALLENGER),
        )

    def load(self, version: str, *, validate: bool = True) -> ModelBundle:
        return read_bundle(self._bundle_path(version), validate=validate)

    def load_champion(self, *, validate: bool = True) -> ModelBundle:
        """The champion bundle; BundleError when none is published or it fails validation."""
        version = self.champion_version()
        if version is None:
            raise BundleError(f"no model is published in {self.root}")
        return self.load(version, validate=validate)

    def versions(self) -> list[str]:
        folder = self.root / "versions"
        if not folder.exists():
            return []
        return sorted(p.parent.name for p in folder.glob("*/model.onnx"))


class RolloutSource(Protocol):
    """Where a ModelHolder finds what each role serves: the local store's pointers or the
    registry's aliases."""

    def plan(self) -> RolloutPlan: ...

    def load(self, version: str, *, validate: bool = True) -> ModelBundle: ...


def mirror_registered(
    source: str | None, store: ModelStore, tracking_uri: str | None = None
) -> str:
    """Copy the bundle of a registered version (its artifact `source`) into `store`, as it is
    (the reader validates it); returns its version."""
    from mlflow.artifacts import download_artifacts

    if not source:
        raise ValueError("the registered version has no artifact source")
    with tempfile.TemporaryDirectory() as folder:
        local = download_artifacts(artifact_uri=source, dst_path=folder, tracking_uri=tracking_uri)
        (bundle_file,) = Path(local).glob("*.onnx")
        bundle = read_bundle(bundle_file, validate=False)
    store.add(bundle)
    return bundle.metadata.version


class RegistryRollout:
    """The roles named by MLflow registry aliases ("champion", "canary", "challenger"), their
    bundles mirrored into a local store.

    Serving reads this instead of the store's own pointers when a tracking URI is configured:
    moving an alias (publishing, starting a canary, rolling back) is what changes the served
    models. A bundle is downloaded once, when an alias first names its version. With the
    registry out of reach, the last plan seen stays (logged), so serving carries on.
    """

    def __init__(self, tracking_uri: str, model_name: str, mirror: ModelStore) -> None:
        from mlflow import MlflowClient  # only when a registry is configured

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.model_name, self.mirror = model_name, mirror
        self._last = RolloutPlan()

    def _aliased(self, alias: str) -> tuple[str | None, float]:
        from mlflow.exceptions import MlflowException

        try:
            registered = self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None, 0.0  # the alias is not set: the role is empty
            raise
        version = registered.tags.get(BUNDLE_VERSION_TAG) or ""
        if version not in self.mirror.versions():
            mirror_registered(registered.source, self.mirror, self.client.tracking_uri)
        return version, float(registered.tags.get(CANARY_SHARE_TAG) or 0.0)

    def plan(self) -> RolloutPlan:
        from mlflow.exceptions import MlflowException

        try:
            champion, _ = self._aliased(CHAMPION)
            canary, share = self._aliased(CANARY)
            challenger, _ = self._aliased(CHALLENGER)
        except (MlflowException, OSError, ValueError, BundleError) as exc:
            log.warning("registry rollout of %s unavailable: %s", self.model_name, exc)
            return self._last
        self._last = RolloutPlan(
            champion=champion, canary=canary, canary_share=share, challenger=challenger
        )
        return self._last

    def load(self, version: str, *, validate: bool = True) -> ModelBundle:
        return self.mirror.load(version, validate=validate)


@dataclass(frozen=True)
class Served:
    """The models serving at one moment, one Scorer per role. Taken once per request batch or
    stream batch, so nothing scored together mixes two plans."""

    champion: Scorer
    canary: Scorer | None = None
    canary_share: float = 0.0
    shadow: Scorer | None = None

    def for_card(self, card_id: str) -> tuple[str, Scorer]:
        """The role and model that answer this card (sticky: by the card's hash)."""
        if self.canary is not None and in_canary(card_id, self.canary_share):
            return CANARY, self.canary
        return CHAMPION, self.champion

    @functools.cached_property
    def canary_shares_contract(self) -> bool:
        """Whether the canary encodes features as the champion does (one matrix serves both)."""
        return self.canary is not None and self.canary.contract == self.champion.contract

    @functools.cached_property
    def shadow_shares_contract(self) -> bool:
        """Whether the challenger encodes features as every answering model does (their
        model inputs serve it too)."""
        answering = [self.champion, *([self.canary] if self.canary else [])]
        shadow = self.shadow
        return shadow is not None and all(s.contract == shadow.contract for s in answering)

    @property
    def roles(self) -> dict[str, Scorer]:
        found = {CHAMPION: self.champion, CANARY: self.canary, SHADOW: self.shadow}
        return {role: scorer for role, scorer in found.items() if scorer is not None}


class ModelHolder:
    """Holds the served models and replaces them whole when the plan (the store's pointers or
    the registry's aliases) changes.

    A REST batch or a stream batch takes `served` once and scores with that object to the end,
    so in-flight work finishes on the old models while new work gets the new ones, and no
    answer mixes two versions. A bundle that fails validation is refused and counted: a
    refused champion leaves the old one serving; a refused canary or challenger leaves its
    role empty. A canary or challenger trained with another label delay than the champion is
    refused too (the online state follows the champion's).
    """

    def __init__(self, store: RolloutSource, *, threads: int = 1) -> None:
        self.store = store
        self.threads = threads
        self.served: Served | None = None
        self.load_failures = 0
        self.last_error = ""
        self._seen: RolloutPlan | None = None

    @property
    def current(self) -> Scorer | None:
        """The champion's Scorer (None until a valid one is published)."""
        return self.served.champion if self.served is not None else None

    @property
    def ready(self) -> bool:
        return self.served is not None

    def _scorer(
        self, version: str | None, loaded: dict[str, Scorer], label_delay_us: int | None = None
    ) -> Scorer | None:
        """The Scorer of `version` (loaded once); with `label_delay_us`, refused unless the
        model was trained with that label delay (bundle validation's own check)."""
        if not version:
            return None
        try:
            if version not in loaded:
                loaded[version] = Scorer(self.store.load(version), intra_op_threads=self.threads)
            if label_delay_us is not None:
                validate_bundle(loaded[version].bundle, label_delay_us=label_delay_us)
        except BundleError as exc:
            self.load_failures += 1
            self.last_error = str(exc)
            log.error("refused model %s: %s", version, exc)
            return None
        return loaded[version]

    def refresh(self) -> bool:
        """Load what the plan names if it changed; True when the served models changed."""
        plan = self.store.plan()
        if plan == self._seen:
            return False
        self._seen = plan
        before = self.served
        loaded = {s.version: s for s in (before.roles.values() if before else ())}
        champion = self._scorer(plan.champion, loaded)
        if champion is None:
            champion = before.champion if before else None
        if champion is None:
            return False
        delay = champion.contract.label_delay_us  # the online state follows the champion's
        served = Served(
            champion=champion,
            canary=self._scorer(plan.canary, loaded, delay),
            canary_share=plan.canary_share,
            shadow=self._scorer(plan.challenger, loaded, delay),
        )
        if before is not None and _versions(before) == _versions(served):
            return False
        self.served = served
        log.info("serving %s", _versions(served))
        return True

    async def watch(self, interval: float) -> None:
        """Poll the plan forever; loading happens off the event loop."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # a broken store must not kill the watcher
                log.exception("model refresh failed")


def _versions(served: Served) -> dict[str, str | float]:
    found: dict[str, str | float] = {r: s.bundle.label for r, s in served.roles.items()}
    if served.canary is not None:
        found["canary_share"] = served.canary_share
    return found
