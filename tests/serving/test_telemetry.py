"""An outage is logged once per interval with a count, not once per request."""

from __future__ import annotations

import logging

import pytest

from serving.telemetry import Throttled

pytestmark = pytest.mark.unit


def test_a_throttled_warning_is_written_once_per_interval_with_what_was_left_out(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([100.0, 100.1, 100.2, 100.3, 106.0])
    monkeypatch.setattr("serving.telemetry.time.monotonic", lambda: next(clock))
    log = logging.getLogger("test.throttled")
    throttled = Throttled(log, seconds=5.0)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        for _ in range(5):
            throttled.warning("redis down: %s", "refused")
    assert [r.getMessage() for r in caplog.records] == [
        "redis down: refused",
        "redis down: refused (3 more in the last 6 s)",
    ]
