"""An outage is logged once per interval with a count, not once per request; without an
exporter, spans record nothing and leave the current span alone."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from serving.telemetry import Throttled, make_tracer

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


def test_without_an_exporter_spans_record_nothing_and_nest() -> None:
    tracer = make_tracer("")
    before = trace.get_current_span()
    with (
        tracer.start_as_current_span("outer") as outer,
        tracer.start_as_current_span("inner") as inner,
    ):
        inner.set_attribute("rows", 3)
        assert not outer.is_recording()
        assert not inner.is_recording()
        assert trace.get_current_span() is before


def test_with_a_provider_the_pipeline_spans_are_exported() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    with make_tracer("", provider).start_as_current_span("inference") as span:
        span.set_attribute("rows", 3)
    assert [(s.name, dict(s.attributes or {})) for s in exported.get_finished_spans()] == [
        ("inference", {"rows": 3})
    ]
