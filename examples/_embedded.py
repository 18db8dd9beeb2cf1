"""The examples' embedded default: print finished spans to stdout unless OTel is configured.

    from _embedded import configure_embedded_default

    configure_embedded_default()   # True: we installed the printer; False: OTel was set up already

Run plainly (``python examples/nations_dump.py``) each finished span becomes one line::

    Nations Dump Processing  12.3 s  rss start 245.3 MB end 289.1 MB delta +43.8 MB peak 601.2 MB

indented two spaces per parent. Run under ``opentelemetry-instrument`` (or from an app that set an
SDK tracer provider) this does nothing, so the ``OTEL_*`` variables decide where spans go.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

__all__ = ["SpanLinePrinter", "configure_embedded_default", "format_span_line"]

_MB = 1024 * 1024


def _mb(span: ReadableSpan, key: str) -> float | None:
    value = (span.attributes or {}).get(key)
    return value / _MB if isinstance(value, int | float) else None


def format_span_line(span: ReadableSpan) -> str:
    """One readable line: name, duration, RSS start/end/delta/peak (when the span has them)."""
    parts = [span.name]
    if span.start_time is not None and span.end_time is not None:
        parts.append(f"{(span.end_time - span.start_time) / 1e9:.1f} s")
    memory = [
        f"{label} {value:+.1f} MB" if label == "delta" else f"{label} {value:.1f} MB"
        for label, key in (
            ("rss start", "memory.rss.start"),
            ("end", "memory.rss.end"),
            ("delta", "memory.rss.delta"),
            ("peak", "memory.rss.peak"),
        )
        if (value := _mb(span, key)) is not None
    ]
    if memory:
        parts.append(" ".join(memory))
    label = (span.attributes or {}).get("memory.task.end_label")
    if label:
        parts.append(f"[{label}]")
    if span.status.status_code is StatusCode.ERROR:
        parts.append(f"ERROR {span.status.description or ''}".rstrip())
    return "  ".join(parts)


class SpanLinePrinter(SpanProcessor):
    """Writes each finished span as one line, indented by its depth among spans seen starting.

    A processor rather than an exporter because the depth is only known when a span starts.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._depths: dict[int, int] = {}
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        parent = span.parent
        with self._lock:
            depth = self._depths.get(parent.span_id, -1) + 1 if parent is not None else 0
            self._depths[span.context.span_id] = depth

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            depth = self._depths.pop(span.context.span_id, 0) if span.context else 0
        # sys.stdout is looked up per line so redirected or captured stdout still sees it.
        stream = self._stream or sys.stdout
        try:
            stream.write("  " * depth + format_span_line(span) + "\n")
            stream.flush()
        except (OSError, ValueError):  # closed or broken stdout must not break the app
            pass

    def shutdown(self) -> None:
        with self._lock:
            self._depths.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def configure_embedded_default(stream: TextIO | None = None) -> bool:
    """Install an SDK tracer provider printing spans to ``stream`` (stdout) unless one exists.

    Returns True when it installed one, False when an SDK provider was already there (e.g. under
    ``opentelemetry-instrument``), which is then left untouched.
    """
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return False
    provider = TracerProvider()
    provider.add_span_processor(SpanLinePrinter(stream))
    trace.set_tracer_provider(provider)
    return trace.get_tracer_provider() is provider
