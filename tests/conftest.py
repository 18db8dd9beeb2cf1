"""Shared fixtures: one global tracer provider backed by an in-memory exporter, a fake reading
source, and the logging and monitor state restored after every test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_memory.runtime.runtime import get_runtime
from otel_memory.testing import FakeReadingSource

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
# The global tracer provider can be set once per process, so every test shares this one.
trace.set_tracer_provider(_PROVIDER)


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """The in-memory exporter behind the global tracer provider, emptied for each test."""
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
def fake_source() -> Iterator[FakeReadingSource]:
    """A scripted reading source installed as the process-wide source for one test."""
    source = FakeReadingSource()
    get_runtime().set_reading_source(source)
    yield source
    get_runtime().set_reading_source(None)


@pytest.fixture(autouse=True)
def _reset_runtime() -> Iterator[None]:
    """Every test starts and ends with the package as a fresh process has it."""
    get_runtime().reset()
    yield
    get_runtime().reset()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put the root, otel_memory and memory_profiler loggers back as they were."""
    names = ["", "otel_memory", "memory_profiler"]
    saved = {
        name: (lg.level, list(lg.handlers), lg.propagate)
        for name in names
        for lg in [logging.getLogger(name)]
    }
    yield
    for name, (level, handlers, propagate) in saved.items():
        lg = logging.getLogger(name)
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate
