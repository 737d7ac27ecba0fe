"""The local model store: published bundles by version, and an atomically replaced pointer;
and the registry alias as the other place a champion can be named.

    <root>/versions/<version>/model.onnx   one file per published bundle, never rewritten
    <root>/CHAMPION                         the version to serve (replaced with os.replace)

Readers (the REST service, the stream workers) resolve the pointer and load that version's
file; a publisher writes the new version's file first and then swaps the pointer, so a reader
sees the old champion or the new one, never a mixture. Rolling back is pointing at an older
version.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fraud_core.bundle import BundleError, ModelBundle, read_bundle, write_bundle
from fraud_core.inference import Scorer

log = logging.getLogger(__name__)

POINTER = "CHAMPION"
_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CHAMPION_ALIAS = "champion"
"""The MLflow registry alias of the published model."""
BUNDLE_VERSION_TAG = "bundle_version"
"""Tag on each registered version: the fraudscale bundle version it holds."""


@dataclass(frozen=True)
class PointerState:
    """What a watcher compares to notice a new publication cheaply."""

    version: str | None
    mtime_ns: int


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

    def point_to(self, version: str) -> None:
        """Make a stored version the champion (also how a rollback is done)."""
        if not self._bundle_path(version).exists():
            raise BundleError(f"model version {version!r} is not in the store at {self.root}")
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{POINTER}.")
        with os.fdopen(fd, "w") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / POINTER)

    def champion_version(self) -> str | None:
        try:
            return (self.root / POINTER).read_text().strip() or None
        except FileNotFoundError:
            return None

    def pointer_state(self) -> PointerState:
        try:
            stat = (self.root / POINTER).stat()
        except FileNotFoundError:
            return PointerState(None, 0)
        return PointerState(self.champion_version(), stat.st_mtime_ns)

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


class ChampionSource(Protocol):
    """Where a ModelHolder finds the champion: the local store's pointer or a registry alias."""

    def pointer_state(self) -> PointerState: ...

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


class RegistryChampion:
    """The champion named by an MLflow registry alias, its bundles mirrored into a local store.

    Serving reads this instead of the store's own pointer when a tracking URI is configured:
    moving the alias (publishing, or rolling back) is what swaps the served model. A bundle
    is downloaded once, when the alias first names its version. With the registry out of
    reach, the last champion seen stays (logged), so serving carries on.
    """

    def __init__(
        self, tracking_uri: str, model_name: str, mirror: ModelStore, alias: str = CHAMPION_ALIAS
    ) -> None:
        from mlflow import MlflowClient  # only when a registry is configured

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.model_name, self.mirror, self.alias = model_name, mirror, alias
        self._last = PointerState(None, 0)

    def pointer_state(self) -> PointerState:
        from mlflow.exceptions import MlflowException

        try:
            registered = self.client.get_model_version_by_alias(self.model_name, self.alias)
            version = registered.tags.get(BUNDLE_VERSION_TAG) or ""
            if version not in self.mirror.versions():
                mirror_registered(registered.source, self.mirror, self.client.tracking_uri)
        except (MlflowException, OSError, ValueError, BundleError) as exc:
            log.warning("registry champion of %s unavailable: %s", self.model_name, exc)
            return self._last
        self._last = PointerState(version, int(registered.version))
        return self._last

    def load(self, version: str, *, validate: bool = True) -> ModelBundle:
        return self.mirror.load(version, validate=validate)


class ModelHolder:
    """Holds the current Scorer and replaces it whole when the store's pointer moves.

    A REST request or a stream batch takes `current` once and scores with that object to the
    end, so in-flight work finishes on the old model while new work gets the new model, and no
    answer mixes two versions. A bundle that fails validation is refused and counted; the old
    one serves on.
    """

    def __init__(self, store: ChampionSource, *, threads: int = 1) -> None:
        self.store = store
        self.threads = threads
        self.current: Scorer | None = None
        self.load_failures = 0
        self.last_error = ""
        self._seen = PointerState(None, -1)

    @property
    def ready(self) -> bool:
        return self.current is not None

    def refresh(self) -> bool:
        """Load the published champion if the pointer changed; True when a new model is live."""
        state = self.store.pointer_state()
        if state == self._seen:
            return False
        self._seen = state
        if state.version is None:
            return False
        if self.current is not None and self.current.version == state.version:
            return False
        try:
            scorer = Scorer(self.store.load(state.version), intra_op_threads=self.threads)
        except BundleError as exc:
            self.load_failures += 1
            self.last_error = str(exc)
            log.error("refused model %s: %s", state.version, exc)
            return False
        previous = self.current.version if self.current else None
        self.current = scorer
        log.info("serving model %s (was %s)", scorer.bundle.label, previous)
        return True

    async def watch(self, interval: float) -> None:
        """Poll the pointer forever; loading happens off the event loop."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # a broken store must not kill the watcher
                log.exception("model refresh failed")
