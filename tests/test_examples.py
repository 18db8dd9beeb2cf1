"""The examples run as users run them: ``nations_dump.py`` as a subprocess, plainly and under
``opentelemetry-instrument``; the embedded-default helper against real SDK spans."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_memory.base.logline import Marker, parse_line
from otel_memory.kernel.readings import MB

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BIN = Path(sys.executable).parent


def _load_example_module(name: str):
    """Import ``examples/<name>.py`` without putting examples/ on sys.path for every test."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


embedded = _load_example_module("_embedded")

VARIANT_TASKS = ["Nations Dump (streaming)", "Nations Dump (load-all)"]
CHILD_TASKS = ["Nations Dump Download", "Nations Dump Processing"]
SUMMARY_ROW = re.compile(
    r"^(?P<variant>streaming|load-all)\s+(?P<task>Nations Dump \w+)\s+(?P<seconds>\d+\.\d)"
    r"\s+(?P<start>\d+\.\d)\s+(?P<delta>[+-]\d+\.\d)\s+(?P<peak>\d+\.\d)\s+(?P<rise>[+-]\d+\.\d)$",
    re.MULTILINE,
)


def _clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without OTEL_* settings that would change where things go."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra)
    return env


def _run_nations_dump(tmp_path: Path, *prefix: str, env: dict[str, str]) -> str:
    command = [
        *prefix,
        sys.executable,
        str(EXAMPLES / "nations_dump.py"),
        "--nations",
        "2000",
        "--log-dir",
        str(tmp_path / "logs"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _log_lines(log_dir: Path) -> list[str]:
    files = sorted(log_dir.glob("memory_*.log"))  # two when the run crosses midnight
    assert files, f"no daily log in {log_dir}"
    return [line for path in files for line in path.read_text(encoding="utf-8").splitlines()]


def _assert_daily_log(log_dir: Path) -> None:
    lines = _log_lines(log_dir)
    assert [line for line in lines if parse_line(line) is None] == []
    events = Counter((p.marker, p.name) for p in map(parse_line, lines) if p is not None)
    for name in VARIANT_TASKS:
        assert events[(Marker.START, name)] == 1, name
    for name in CHILD_TASKS:
        assert events[(Marker.START, name)] == 2
        assert events[(Marker.END, name)] == 2
    assert events[(Marker.END, "Nations Dump Complete")] == 2


def _summary_rows(stdout: str) -> dict[tuple[str, str], dict[str, float]]:
    return {
        (m["variant"], m["task"]): {k: float(m[k]) for k in ("start", "delta", "peak", "rise")}
        for m in SUMMARY_ROW.finditer(stdout)
    }


@pytest.mark.e2e
def test_nations_dump_without_collector(tmp_path):
    stdout = _run_nations_dump(tmp_path, env=_clean_env())

    _assert_daily_log(tmp_path / "logs")
    # The embedded default printed every span, children indented under their variant.
    for variant in VARIANT_TASKS:
        assert re.search(rf"^{re.escape(variant)}  .*\[Nations Dump Complete\]$", stdout, re.M)
    assert len(re.findall(r"^  Nations Dump Processing  .* peak ", stdout, re.M)) == 2
    assert stdout.count("inserted 2,000 nations") == 2
    rows = _summary_rows(stdout)
    assert set(rows) == {(v, t) for v in ("streaming", "load-all") for t in CHILD_TASKS}
    for row in rows.values():
        assert row["peak"] >= row["start"]  # the span's peak is never below its start
        assert row["rise"] >= 0


@pytest.mark.e2e
def test_nations_dump_under_opentelemetry_instrument_keeps_its_providers(tmp_path):
    env = _clean_env(
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME="nations-dump",
        OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR=str(tmp_path / "logs"),
        OTEL_PYTHON_MEMORY_MONITOR_INTERVAL_SECONDS="1",
    )
    stdout = _run_nations_dump(tmp_path, str(BIN / "opentelemetry-instrument"), env=env)

    _assert_daily_log(tmp_path / "logs")
    # The console exporter configured by the OTEL_* variables got the spans, not our printer.
    names = re.findall(r'^    "name": "([^"]+)",$', stdout, re.M)
    assert Counter(names)["Nations Dump Processing"] == 2
    assert not re.search(r"^  Nations Dump Processing  ", stdout, re.M)
    first = stdout.index("{")
    span = json.JSONDecoder().raw_decode(stdout[first:])[0]
    assert span["resource"]["attributes"]["service.name"] == "nations-dump"
    assert len(_summary_rows(stdout)) == 4


def test_embedded_default_leaves_an_sdk_provider_alone(span_exporter):
    provider = trace.get_tracer_provider()

    assert embedded.configure_embedded_default() is False
    assert trace.get_tracer_provider() is provider


def test_printer_writes_one_indented_line_per_span():
    out = io.StringIO()
    kept = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(embedded.SpanLinePrinter(out))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("Regions Dump") as parent:
        parent.set_attributes({"memory.rss.start": 245 * MB, "memory.rss.peak": 601 * MB})
        with tracer.start_as_current_span("Regions Dump Download") as child:
            child.set_attributes(
                {"memory.rss.start": 10 * MB, "memory.rss.end": 8 * MB, "memory.rss.delta": -2 * MB}
            )

    # Children end first; they are indented under the parent that is still open.
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("  Regions Dump Download  ")
    assert lines[1].startswith("Regions Dump  ")
    assert lines[0].endswith("rss start 10.0 MB end 8.0 MB delta -2.0 MB")
    assert lines[1].endswith("rss start 245.0 MB peak 601.0 MB")
    child_span = kept.get_finished_spans()[0]
    assert "  " + embedded.format_span_line(child_span) == lines[0]
