"""The served model: loaded from the model store and swapped when a new one is published."""

from __future__ import annotations

import asyncio
import logging

from fraud_core.bundle import BundleError
from fraud_core.model_store import ModelStore, PointerState
from fraud_core.scorer import Scorer

log = logging.getLogger(__name__)


class ModelHolder:
    """Holds the current Scorer and replaces it whole when the store's pointer moves.

    A request takes `current` once and scores with that object to the end, so in-flight
    requests finish on the old model while new ones get the new model, and no response mixes
    two versions. A bundle that fails validation is refused and counted; the old one serves on.
    """

    def __init__(self, store: ModelStore, *, threads: int = 1) -> None:
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
