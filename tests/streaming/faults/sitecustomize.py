"""A fault for the stream tests, loaded by a worker started with this folder on PYTHONPATH:
the worker does not create the topics named in FRAUD_TEST_UNDECLARED_TOPICS (comma-separated),
as when the topic is someone else's to provision and arrives after the group formed (or when
a cluster's metadata shows a new topic only after the group's first generation, which a real
cluster does only by chance). With FRAUD_TEST_JOIN_WITHOUT_CHANGELOGS=1, the worker does not
wait for its tables' changelogs before it joins its group (streaming.faust_overrides.Conductor),
as when one broker's metadata shows them and the group leader's does not yet."""

from __future__ import annotations

import os

import faust.topics

_undeclared = set(filter(None, os.environ.get("FRAUD_TEST_UNDECLARED_TOPICS", "").split(",")))
_declare = faust.topics.Topic.declare


async def _declare_others(self: faust.topics.Topic) -> None:
    if not _undeclared.intersection(self.topics):
        await _declare(self)


faust.topics.Topic.declare = _declare_others  # type: ignore[method-assign]

if os.environ.get("FRAUD_TEST_JOIN_WITHOUT_CHANGELOGS") == "1":
    import streaming.faust_overrides

    async def _no_wait(bootstrap: str, topics: object, **_: object) -> dict[str, object]:
        return {}

    streaming.faust_overrides.wait_for_topics = _no_wait  # type: ignore[assignment]
