"""Process-wide settings the services make at start-up: whether their compiled paths are
installed, and how often the garbage collector runs."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

from fraud_core import rollout
from fraud_core.runtime import YOUNG_THRESHOLD, freeze_start_up_heap, report_native

pytestmark = pytest.mark.unit


def test_a_service_warns_when_its_compiled_paths_are_missing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("fraudscale-test")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert report_native(log)  # `make install` builds the `native` extra
        # An image or a source install without the extra (the real package cannot be made
        # to vanish from this environment, so its import is taken as failed).
        monkeypatch.setattr(rollout, "COMPILED", False)
        assert not report_native(log)
    levels = [(r.levelno, "not installed" in r.getMessage()) for r in caplog.records]
    assert levels == [(logging.INFO, False), (logging.WARNING, True)]


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of each collection the collector makes during the test; its thresholds
    are restored after it, and the permanent generation emptied (`gc.unfreeze`: the objects
    frozen before the test as well as during it)."""
    made: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            made.append(info["generation"])

    thresholds = gc.get_threshold()
    gc.callbacks.append(count)
    try:
        yield made
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def test_requests_in_flight_are_not_collected_every_700_allocations(
    collections: list[int],
) -> None:
    # What a batch of requests keeps alive at once: a few thousand small containers.
    gc.set_threshold(700, 10, 10)  # Python's default
    in_flight = [[i] for i in range(5_000)]
    assert len(collections) >= 5
    collections.clear()
    del in_flight
    freeze_start_up_heap()
    collections.clear()  # its own full collection
    in_flight = [[i] for i in range(YOUNG_THRESHOLD - 1_000)]
    assert collections == []
    in_flight += [[i] for i in range(2_000)]
    assert collections == [0]  # one young collection, past the threshold
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
