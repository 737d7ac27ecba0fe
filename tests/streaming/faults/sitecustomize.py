"""A fault for the stream tests, loaded by a worker started with this folder on PYTHONPATH:
the worker does not create the topics named in FRAUD_TEST_UNDECLARED_TOPICS (comma-separated),
as when the topic is someone else's to provision and arrives after the group formed (or when
a cluster's metadata shows a new topic only after the group's first generation, which a real
cluster does only by chance)."""

from __future__ import annotations

import os

import faust.topics

_undeclared = set(filter(None, os.environ.get("FRAUD_TEST_UNDECLARED_TOPICS", "").split(",")))
_declare = faust.topics.Topic.declare


async def _declare_others(self: faust.topics.Topic) -> None:
    if not _undeclared.intersection(self.topics):
        await _declare(self)


faust.topics.Topic.declare = _declare_others  # type: ignore[method-assign]
