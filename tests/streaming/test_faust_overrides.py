"""streaming/faust_overrides.py copies and overrides Faust internals of one release: an upgrade
must fail here until that module is reviewed against the new code."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from streaming.faust_overrides import CHECKED_VERSION, check_faust_version

pytestmark = pytest.mark.unit


def test_the_installed_faust_is_the_release_the_overrides_were_checked_against() -> None:
    assert importlib.metadata.version("faust-streaming") == CHECKED_VERSION
    check_faust_version()  # what a worker runs at start-up


def test_another_release_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.16.0")
    with pytest.raises(RuntimeError, match=re.escape(f"checked against {CHECKED_VERSION}")):
        check_faust_version()
