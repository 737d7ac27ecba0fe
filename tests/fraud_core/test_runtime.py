"""The services say at start-up whether their compiled paths are installed."""

from __future__ import annotations

import logging

import pytest

from fraud_core import rollout
from fraud_core.runtime import report_native

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
