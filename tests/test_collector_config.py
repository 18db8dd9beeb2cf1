"""collector-config/, checked offline (Docker does not run here): every file parses, every name one
file uses is defined by another, and every metric the alerts and the dashboard query is one the
package really exports, in the Prometheus form the collector's ``prometheus`` exporter gives it."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_memory.base import attributes
from otel_memory.base.config import Thresholds, config_from_dict
from otel_memory.guards.profiler import Profiler
from otel_memory.kernel.readings import MB
from otel_memory.sinks.gauges import METER_NAME, install_metrics
from otel_memory.sinks.histograms import TaskHistograms
from otel_memory.testing import FakeReadingSource, reading

CONFIG_DIR = Path(__file__).resolve().parent.parent / "collector-config"
COMPONENT_KINDS = ("receivers", "processors", "exporters")


def _load(name: str) -> Any:
    text = (CONFIG_DIR / name).read_text()
    return json.loads(text) if name.endswith(".json") else yaml.safe_load(text)


COLLECTOR = _load("otel-collector.yaml")
COMPOSE = _load("docker-compose.yaml")
PROMETHEUS = _load("prometheus.yml")
ALERTS = _load("alert-rules.yml")
DATASOURCES = _load("grafana/provisioning/datasources/datasources.yaml")
DASHBOARD_PROVIDERS = _load("grafana/provisioning/dashboards/dashboards.yaml")
DASHBOARD = _load("grafana/dashboards/otel-memory.json")


# --------------------------------------------------------------------------- Prometheus names

# The collector's UCUM -> Prometheus unit words (pkg/translator/prometheus, otlptranslator).
_UNIT_WORDS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes",
    "MiBy": "mebibytes", "GiBy": "gibibytes", "KBy": "kilobytes", "MBy": "megabytes",
    "GBy": "gigabytes", "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts",
    "g": "grams", "Cel": "celsius", "Hz": "hertz", "%": "percent", "$": "dollars",
}  # fmt: skip
_PER_UNIT_WORDS = {
    "s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year",
}  # fmt: skip


def prometheus_name(name: str, unit: str, kind: str = "gauge", monotonic: bool = False) -> str:
    """The name the collector's prometheus exporter (UnderscoreEscapingWithSuffixes) exposes.

    Dots and other characters become ``_``; the unit is appended unless the name already holds
    it (``By`` -> ``bytes``, ``By/h`` -> ``bytes_per_hour``, ``1`` -> ``ratio`` on gauges only);
    ``{annotations}`` are dropped; monotonic sums get ``_total``.
    """
    tokens = [token for token in re.split(r"[^a-zA-Z0-9:]+", name) if token]
    main, _, per = re.sub(r"\{[^}]*\}", "", unit).strip().partition("/")
    if main == "1":
        word = "ratio" if kind == "gauge" else ""
    else:
        word = _UNIT_WORDS.get(main, re.sub(r"[^a-zA-Z0-9]", "", main))
    if word and word not in tokens:
        tokens.append(word)
    if per:
        per_word = _PER_UNIT_WORDS.get(per, re.sub(r"[^a-zA-Z0-9]", "", per))
        if per_word and per_word not in tokens:
            tokens += ["per", per_word]
    if kind == "sum" and monotonic:
        tokens.append("total")
    return "_".join(tokens)


@pytest.mark.parametrize(
    ("name", "unit", "kind", "monotonic", "expected"),
    [
        ("process.memory.usage", "By", "sum", False, "process_memory_usage_bytes"),
        ("otel_memory.free_ratio", "1", "gauge", False, "otel_memory_free_ratio"),
        ("otel_memory.task.rss.growth", "By", "histogram", False,
         "otel_memory_task_rss_growth_bytes"),
        ("system.memory.utilization", "1", "gauge", False, "system_memory_utilization_ratio"),
        ("python.heap.objects", "{object}", "gauge", False, "python_heap_objects"),
        ("process.memory.idle_trend", "By/h", "gauge", False,
         "process_memory_idle_trend_bytes_per_hour"),
        ("system.processes.created", "{process}", "sum", True, "system_processes_created_total"),
        ("queue.depth", "1", "sum", False, "queue_depth"),
    ],
)  # fmt: skip
def test_prometheus_name_follows_the_collector_translation(name, unit, kind, monotonic, expected):
    assert prometheus_name(name, unit, kind, monotonic) == expected


def exported_prometheus_names() -> dict[str, str]:
    """``prometheus name -> OTel name`` of every metric the package exports with everything on.

    The real instruments of :func:`install_metrics` (heap gauges and leak gauges included),
    collected twice by an in-memory reader so that the idle trend has two samples, and the task
    histograms with one recorded run.
    """
    config = config_from_dict({"general": {"monitoring": {"memory_profiling": {"enabled": True}}}})
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    profiler = Profiler(config)
    profiler.snapshot()
    source = FakeReadingSource([reading(timestamp=0), reading(rss_mb=101, timestamp=60)])
    handle = install_metrics(
        config,
        meter_provider=provider,
        reading_source=source,
        profiler=profiler,
        is_idle=lambda: True,
    )
    TaskHistograms(provider).record("Nations Dump", 300 * MB, 10 * MB, None)
    try:
        reader.collect()  # the first idle sample; the trend needs two
        data = reader.get_metrics_data()
    finally:
        handle.close()
        provider.shutdown()
    names: dict[str, str] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != METER_NAME:
                continue
            for metric in scope_metrics.metrics:
                kind = type(metric.data).__name__.lower()  # gauge, sum, histogram
                monotonic = bool(getattr(metric.data, "is_monotonic", False))
                translated = prometheus_name(metric.name, metric.unit or "", kind, monotonic)
                names[translated] = metric.name
    return names


# --------------------------------------------------------------------------- what the files use

_METRIC_PREFIXES = ("process_", "system_", "python_", "otel_memory_")


def metric_names_in_promql(expr: str) -> set[str]:
    """Metric names in a PromQL expression (ours all start with process_/system_/python_/
    otel_memory_); a histogram's ``_bucket``/``_sum``/``_count`` series count as the histogram."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    tokens = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
    return {
        re.sub(r"_(bucket|sum|count)$", "", token)
        for token in tokens
        if token.startswith(_METRIC_PREFIXES)
    }


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in ALERTS["groups"] for rule in group["rules"]]


def dashboard_targets(datasource_type: str) -> list[dict[str, Any]]:
    return [
        target
        for panel in DASHBOARD["panels"]
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == datasource_type
    ]


def prometheus_names_used() -> dict[str, set[str]]:
    """Metric names queried by the alert rules, the dashboard panels and its variables."""
    exprs = {"alert-rules.yml": [rule["expr"] for rule in alert_rules()]}
    exprs["otel-memory.json"] = [t["expr"] for t in dashboard_targets("prometheus")]
    exprs["otel-memory.json"] += [v["definition"] for v in DASHBOARD["templating"]["list"]]
    return {
        source: set().union(*(metric_names_in_promql(expr) for expr in source_exprs))
        for source, source_exprs in exprs.items()
    }


# --------------------------------------------------------------------------- the tests


def test_every_file_parses():
    files = [path for path in CONFIG_DIR.rglob("*") if path.is_file()]
    assert {path.suffix for path in files} <= {".yaml", ".yml", ".json"}
    for path in files:
        assert _load(str(path.relative_to(CONFIG_DIR))) is not None, path


def test_collector_pipelines_use_defined_components():
    pipelines = COLLECTOR["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    used: dict[str, set[str]] = {kind: set() for kind in COMPONENT_KINDS}
    for name, pipeline in pipelines.items():
        for kind in COMPONENT_KINDS:
            assert pipeline[kind], (name, kind)
            assert set(pipeline[kind]) <= set(COLLECTOR[kind]), (name, kind)
            used[kind].update(pipeline[kind])
        # memory_limiter must see data before anything buffers it
        assert pipeline["processors"][0] == "memory_limiter"
        assert "batch" in pipeline["processors"]
    for kind in COMPONENT_KINDS:
        assert used[kind] == set(COLLECTOR[kind]), f"defined but unused {kind}"
    assert set(COLLECTOR["service"]["extensions"]) <= set(COLLECTOR["extensions"])
    assert set(COLLECTOR["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}


def test_each_signal_goes_to_its_backends():
    pipelines = COLLECTOR["service"]["pipelines"]
    exporters = COLLECTOR["exporters"]

    def hosts(signal: str) -> set[str]:
        return {
            urlsplit("//" + exporters[name]["endpoint"].split("://")[-1]).hostname
            for name in pipelines[signal]["exporters"]
            if "endpoint" in exporters[name] and not name.startswith("prometheus")
        }

    assert hosts("traces") == {"jaeger", "tempo"}
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert "loki" in hosts("logs")
    assert exporters["otlp_http/loki"]["endpoint"].endswith(":3100/otlp")


def _service_hosts_and_ports(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else "//" + url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port


def test_endpoints_name_compose_services():
    services = COMPOSE["services"]
    for name, exporter in COLLECTOR["exporters"].items():
        if "endpoint" in exporter and not name.startswith("prometheus"):
            host, _ = _service_hosts_and_ports(exporter["endpoint"])
            assert host in services, name
    for datasource in DATASOURCES["datasources"]:
        host, _ = _service_hosts_and_ports(datasource["url"])
        assert host in services, datasource["name"]
    # Prometheus scrapes the port the collector's prometheus exporter listens on.
    _, exporter_port = _service_hosts_and_ports(COLLECTOR["exporters"]["prometheus"]["endpoint"])
    [scrape] = PROMETHEUS["scrape_configs"]
    [target] = scrape["static_configs"][0]["targets"]
    assert _service_hosts_and_ports(target) == ("otel-collector", exporter_port)
    # The collector publishes the OTLP ports applications send to.
    assert {"4317:4317", "4318:4318"} <= set(services["otel-collector"]["ports"])


def _mounts(service: dict[str, Any]) -> dict[PurePosixPath, str]:
    """Container path -> host source of a compose service's volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        mounts[PurePosixPath(target)] = source
    return mounts


def _is_mounted(path: str, mounts: dict[PurePosixPath, str]) -> bool:
    wanted = PurePosixPath(path)
    return any(wanted == target or target in wanted.parents for target in mounts)


def test_compose_mounts_exist_and_configs_are_mounted():
    services = COMPOSE["services"]
    named_volumes = set(COMPOSE.get("volumes") or {})
    for name, service in services.items():
        assert set(service.get("depends_on", [])) <= set(services), name
        for target, source in _mounts(service).items():
            if source.startswith("."):
                assert (CONFIG_DIR / source).exists(), f"{name}: {source} -> {target}"
            else:
                assert source in named_volumes, f"{name}: unknown volume {source}"
        command = service.get("command", [])
        for arg in command if isinstance(command, list) else command.split():
            flag_value = re.fullmatch(r"-{1,2}[\w.-]+=(/\S+)", arg)
            # paths passed as --config... flags must be files we mount (the image's own excepted)
            if flag_value and "config" in arg and not flag_value[1].startswith("/etc/loki/"):
                assert _is_mounted(flag_value[1], _mounts(service)), f"{name}: {arg}"
    prometheus_mounts = _mounts(services["prometheus"])
    [config_flag] = [arg for arg in services["prometheus"]["command"] if "--config.file=" in arg]
    config_dir = PurePosixPath(config_flag.split("=", 1)[1]).parent
    for rule_file in PROMETHEUS["rule_files"]:
        # relative to the config file, so the same prometheus.yml works here and in the container
        assert not rule_file.startswith("/"), rule_file
        assert (CONFIG_DIR / rule_file).is_file(), rule_file
        assert _is_mounted(str(config_dir / rule_file), prometheus_mounts), rule_file
    grafana_mounts = _mounts(services["grafana"])
    for provider in DASHBOARD_PROVIDERS["providers"]:
        assert _is_mounted(provider["options"]["path"], grafana_mounts)
    assert _is_mounted("/etc/grafana/provisioning/datasources", grafana_mounts)


def test_alert_thresholds_are_the_config_defaults():
    defaults = Thresholds()
    rules = {rule["alert"]: rule for rule in alert_rules()}

    def threshold(alert: str) -> float:
        return float(re.search(r"[<>]\s*([\d.]+)", rules[alert]["expr"])[1])

    assert threshold("ProcessRSSWarning") == defaults.rss_warning_mb * MB
    assert threshold("ProcessRSSCritical") == defaults.rss_critical_mb * MB
    assert threshold("SystemMemoryAvailableLow") == defaults.system_available_min_mb * MB
    assert threshold("SystemMemoryFreeLow") == defaults.system_free_min_percent / 100
    assert threshold("PythonHeapLeakSuspects") == 0
    assert threshold("ProcessRSSNearLimit") == 0.8
    assert threshold("ProcessRSSAtLimit") == 0.9
    assert "otel_memory_limit_bytes" in rules["ProcessRSSNearLimit"]["expr"]
    assert {rule["labels"]["severity"] for rule in rules.values()} == {"warning", "critical"}


def test_alerts_and_dashboard_query_metrics_the_package_exports():
    exported = exported_prometheus_names()
    for source, names in prometheus_names_used().items():
        assert names, source
        assert names <= set(exported), f"{source} queries unknown metrics {names - set(exported)}"
    # the dashboard shows every memory gauge and both heap gauges
    assert {
        "process_memory_usage_bytes",
        "process_memory_virtual_bytes",
        "system_memory_linux_available_bytes",
        "otel_memory_available_bytes",
        "otel_memory_free_ratio",
        "otel_memory_limit_bytes",
        "otel_memory_idle_trend_bytes_per_hour",
        "otel_memory_task_rss_growth_bytes",
        "otel_memory_task_rss_retained_bytes",
        "python_heap_objects",
        "python_heap_size_bytes",
        "python_heap_leak_suspects",
    } <= prometheus_names_used()["otel-memory.json"]
    # v0.1 names that sat in namespaces the semantic conventions own are gone everywhere
    for source, names in prometheus_names_used().items():
        assert not names & {"system_memory_free_ratio", "process_memory_idle_trend_bytes_per_hour"}, (
            source
        )


def test_dashboard_uses_provisioned_datasources_and_real_attributes():
    uids = {datasource["uid"] for datasource in DATASOURCES["datasources"]}
    assert {"prometheus", "tempo", "loki", "jaeger"} <= uids
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in uids, panel["title"]
    # label, span and log attribute names in the queries, in the form each backend gives them
    promql = " ".join(target["expr"] for target in dashboard_targets("prometheus"))
    assert "python_type" in promql
    span_attributes = {
        value for name, value in vars(attributes).items() if name.isupper() and "LOG_" not in name
    }
    [traceql] = [target["query"] for target in dashboard_targets("tempo")]
    for used in re.findall(r"span\.([\w.]+)", traceql):
        assert used in span_attributes, used
    [logql] = [target["expr"] for target in dashboard_targets("loki")]
    assert attributes.LOG_MARKER.replace(".", "_") in logql
    # the RSS panel draws the warning and critical levels of the config defaults
    [rss_panel] = [panel for panel in DASHBOARD["panels"] if panel["title"] == "Process RSS"]
    steps = rss_panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    defaults = Thresholds()
    assert [step["value"] for step in steps[1:]] == [
        defaults.rss_warning_mb * MB,
        defaults.rss_critical_mb * MB,
    ]
