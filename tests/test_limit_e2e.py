"""The whole product inside a real limited cgroup (v1): the task span's ``memory.limit``, the
daily file's ``System Available`` and the ``otel_memory.limit`` gauge all follow the cgroup."""

from __future__ import annotations

import json
import subprocess
import sys

from cgroups import limited_cgroup

from otel_memory.base.logline import parse_line
from otel_memory.kernel.readings import MB

CHILD = """
import json, os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import otel_memory
from otel_memory.base.config import config_from_dict
spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
reader = InMemoryMetricReader()
otel_memory.start(
    config_from_dict({"general": {"monitoring": {"memory_monitor": {
        "log_dir": sys.argv[2], "retention_days": 0}}}}),
    tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader]),
)
with otel_memory.traced_task("Nations Dump Processing"):
    ballast = bytearray(30 * 1024 * 1024)
points = {
    m.name: [(dict(p.attributes), p.value) for p in m.data.data_points]
    for rm in reader.get_metrics_data().resource_metrics
    for sm in rm.scope_metrics for m in sm.metrics
}
otel_memory.stop()
(span,) = spans.get_finished_spans()
print(json.dumps({"span": dict(span.attributes), "points": points}))
"""


def test_a_limited_child_reports_its_cgroup_limit_everywhere(tmp_path):
    limit = 200 * MB
    with limited_cgroup(limit) as path:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, path, str(tmp_path)],
            check=False, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    span = seen["span"]
    assert span["memory.limit"] == limit
    assert span["memory.system.available.start"] <= limit
    assert 0 < span["memory.system.free_ratio.end"] < 1
    [(attributes, value)] = seen["points"]["otel_memory.limit"]
    assert value == limit and attributes == {"otel_memory.limit.source": "cgroup_v1"}
    lines = [parse_line(line) for p in tmp_path.glob("memory_*.log") for line in p.open()]
    assert len(lines) == 4 and all(lines)
    for line in lines:
        assert line.available_mb <= limit / MB
