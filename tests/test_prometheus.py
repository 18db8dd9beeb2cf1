"""A real Prometheus against real instrumented apps: the shipped alert rules and dashboard queries.

No collector: each app runs under ``opentelemetry-instrument`` with the Prometheus exporter
(``OTEL_METRICS_EXPORTER=prometheus``) and serves ``/metrics`` on loopback; Prometheus (Debian's
``prometheus`` package, which brings ``promtool``) scrapes them every second and evaluates the
shipped ``collector-config/alert-rules.yml``, loaded through the shipped ``prometheus.yml``'s own
relative ``rule_files`` path, plus a test copy of the RSS rules with low thresholds. Three apps:

* ``holder``: idles, then holds 320 MB when the test says so (the RSS alerts);
* ``leaker``: ``examples/leak_demo.py``'s global-dict leak, kept running (the leak alert fires);
* ``service``: the stock ``examples/async_service.py`` (the leak alert must stay inactive).

Skipped, with the reason, only when the ``prometheus`` or ``promtool`` binary is absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_server import (
    PROMETHEUS,
    PROMTOOL,
    Prometheus,
    free_port,
    get,
    running_prometheus,
    stop,
    wait_for,
)

from otel_memory.kernel.readings import MB, PsutilReadingSource
from otel_memory.sinks import gauges as m

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "collector-config"
APPS = Path(__file__).resolve().parent / "prometheus_apps"
OPENTELEMETRY_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        PROMETHEUS is None or PROMTOOL is None,
        reason="needs the prometheus and promtool binaries (Debian: apt-get install prometheus;"
        " .ci/run installs them)",
    ),
]

APP_SECONDS = 150
"""Upper bound on each app's life; the fixture stops them as soon as the module is done."""
HOLD_MB = 320
RSS_THRESHOLD_MB = 192
"""The test copy's RSS warning level: well above an idle app (~60 MB), well below the hold."""
LEAK_TIMEOUT = 140  # a loaded CI machine needs longer for three post-collection censuses
"""Seconds from the start for the leak alert: three profiler snapshots, 10 s apart, and margin."""

OUR_PROMETHEUS_NAMES = {
    "process_memory_usage_bytes",
    "process_memory_virtual_bytes",
    "system_memory_linux_available_bytes",
    "otel_memory_limit_bytes",
    "otel_memory_available_bytes",
    "otel_memory_free_ratio",
    "otel_memory_idle_trend_bytes_per_hour",
    "otel_memory_events_dropped_total",
    "otel_memory_task_rss_growth_bytes",
    "otel_memory_task_rss_retained_bytes",
    "python_heap_objects",
    "python_heap_size_bytes",
    "python_heap_leak_suspects",
    "python_heap_growth_streak",
    "python_collection_size",
    "python_asyncio_tasks",
}


@dataclass
class App:
    job: str
    port: int
    process: subprocess.Popen[str]
    log: Path

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Stack:
    prometheus: Prometheus
    apps: dict[str, App]
    go_file: Path
    started: float

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.url

    def query(self, promql: str) -> list[dict[str, Any]]:
        return self.prometheus.query(promql)

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts."""
        return list(json.loads(get(f"{self.prometheus_url}/api/v1/alerts"))["data"]["alerts"])

    def alert(self, name: str, job: str, **labels: str) -> dict[str, Any] | None:
        for alert in self.alerts():
            found = alert["labels"]
            wanted = {"alertname": name, "job": job, **labels}
            if all(found.get(key) == value for key, value in wanted.items()):
                return alert
        return None


def start_app(job: str, argv: list[str], log_dir: Path) -> App:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME=job,
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_METRICS_EXPORTER="prometheus",
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT=str(port),
        OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR=str(log_dir / job),
        OTEL_PYTHON_MEMORY_PROFILING_ENABLED="true",
        OTEL_PYTHON_MEMORY_PROFILING_INTERVAL_SECONDS="10",
        OTEL_PYTHON_MEMORY_PROFILING_LEAK_SNAPSHOTS="2",
        PYTHONPATH=str(ROOT),  # the tree under test, whatever the venv was installed from
        PYTHONUNBUFFERED="1",
    )
    log = log_dir / f"{job}.out"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(OPENTELEMETRY_INSTRUMENT), sys.executable, *argv],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return App(job, port, process, log)


def rss_rules_test_copy(limit_bytes: int) -> dict[str, Any]:
    """The RSS warning and near-limit rules with low levels and ``for: 1s``, labelled copy=test."""
    shipped = yaml.safe_load((CONFIG_DIR / "alert-rules.yml").read_text())
    rules = {rule["alert"]: rule for group in shipped["groups"] for rule in group["rules"]}
    levels = {
        "ProcessRSSWarning": str(RSS_THRESHOLD_MB * MB),
        "ProcessRSSNearLimit": repr(RSS_THRESHOLD_MB * MB / limit_bytes),
    }
    copies = []
    for name, level in levels.items():
        rule = dict(rules[name])
        rule["expr"], replaced = re.subn(r">\s*[\d.e+-]+\s*$", f"> {level}", rule["expr"].strip())
        assert replaced == 1, rule["expr"]
        rule["for"] = "1s"
        rule["labels"] = {**rule["labels"], "copy": "test"}
        copies.append(rule)
    return {"groups": [{"name": "otel-memory-test-copy", "rules": copies}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("prometheus")
    go_file = work / "hold-now"
    apps = {
        app.job: app
        for app in (
            start_app(
                "holder",
                [str(APPS / "hold_memory.py"), str(go_file), str(HOLD_MB), str(APP_SECONDS)],
                work,
            ),
            start_app("leaker", [str(APPS / "leak_service.py"), str(APP_SECONDS)], work),
            start_app(
                "service",
                [str(ROOT / "examples" / "async_service.py"), "--seconds", str(APP_SECONDS),
                 "--handlers", "50", "--pause", "0.5"],
                work,
            ),
        )
    }
    # The shipped prometheus.yml, its intervals shortened and its scrape targets replaced; its
    # rule_files stay as shipped, so the relative path must work from wherever the file sits.
    config = yaml.safe_load((CONFIG_DIR / "prometheus.yml").read_text())
    shutil.copy(CONFIG_DIR / "alert-rules.yml", work / "alert-rules.yml")
    limit = PsutilReadingSource().read().system_total
    (work / "alert-rules.test-copy.yml").write_text(yaml.safe_dump(rss_rules_test_copy(limit)))
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [*config["rule_files"], "alert-rules.test-copy.yml"]
    config["scrape_configs"] = [
        {
            "job_name": app.job,
            "scrape_timeout": "1s",
            "static_configs": [{"targets": [f"127.0.0.1:{app.port}"]}],
        }
        for app in apps.values()
    ]
    try:
        with running_prometheus(work, config) as prometheus:
            yield Stack(prometheus, apps, go_file, time.monotonic())
    finally:
        for app in apps.values():
            stop(app.process)


def check(*args: str, cwd: Path = CONFIG_DIR, stdin: bytes | None = None) -> tuple[int, str]:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, input=stdin, capture_output=True, timeout=60, check=False
    )
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


# --------------------------------------------------------------------------- (a) promtool


def test_promtool_accepts_the_rules_their_unit_tests_and_the_config():
    code, output = check("check", "rules", "alert-rules.yml")
    assert code == 0, output
    code, output = check("test", "rules", "alert-rules.test.yml")
    assert code == 0, output
    code, output = check("check", "config", "prometheus.yml")
    assert code == 0, output


def families(exposition: str) -> dict[str, list[str]]:
    """Text exposition split into metric families by ``# HELP`` line."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in exposition.splitlines():
        if line.startswith("# HELP "):
            current = found.setdefault(line.split()[2], [])
        current.append(line)
    return found


@pytest.mark.parametrize("job", ["holder", "leaker", "service"])
def test_promtool_check_metrics_passes_on_each_apps_metrics(stack, job):
    app = stack.apps[job]
    page = wait_for(
        lambda: (text := get(app.metrics_url).decode()) and "python_heap_objects" in text and text,
        30,
        f"{job}'s /metrics with the heap gauges ({app.output()})",
    )
    types = re.findall(r"^# TYPE (\S+) ", page, flags=re.MULTILINE)
    assert len(types) == len(set(types)), "a metric family is exposed twice"
    for name in ("process_memory_usage_bytes", "process_memory_virtual_bytes"):
        # ours or system-metrics' (whichever exports it), never both
        assert len(re.findall(rf"^{name}{{", page, flags=re.MULTILINE)) == 1, name
    ours = {name: lines for name, lines in families(page).items() if name in OUR_PROMETHEUS_NAMES}
    assert {"process_memory_usage_bytes", "otel_memory_limit_bytes", "python_heap_objects"} <= set(
        ours
    )

    only_ours = "".join(line + "\n" for lines in ours.values() for line in lines)
    code, output = check("check", "metrics", stdin=only_ours.encode())
    assert (code, output.strip()) == (0, ""), output

    # The whole page: opentelemetry-instrumentation-system-metrics (installed beside us, as
    # opentelemetry-bootstrap would) has lint findings of its own (``*_count`` gauges such as
    # process_thread_count); none may be about our families, and none may be an error.
    code, output = check("check", "metrics", stdin=page.encode())
    assert code in (0, 3), output  # 3: lint findings only
    for line in output.splitlines():
        name = line.split()[0] if line.strip() else ""
        assert name not in OUR_PROMETHEUS_NAMES, line
        assert "error" not in line.lower(), line


# --------------------------------------------------------------------------- (b) RSS alerts


def test_the_rss_alerts_are_inactive_until_the_app_holds_memory_then_fire(stack):
    # GIVEN the idle holder scraped and the rules evaluated with its samples
    wait_for(lambda: stack.query('process_memory_usage_bytes{job="holder"}'), 30, "holder's RSS")
    rss = float(stack.query('process_memory_usage_bytes{job="holder"}')[0]["value"][1])
    assert rss < RSS_THRESHOLD_MB * MB, f"the idle app already holds {rss / MB:.0f} MB"
    time.sleep(3)  # three evaluations with the sample present
    for name in ("ProcessRSSWarning", "ProcessRSSNearLimit"):
        assert stack.alert(name, "holder", copy="test") is None, name
    rules = json.loads(get(f"{stack.prometheus_url}/api/v1/rules"))["data"]["groups"]
    copy = {rule["name"]: rule for group in rules for rule in group["rules"]
            if group["name"] == "otel-memory-test-copy"}  # fmt: skip
    assert {rule["state"] for rule in copy.values()} == {"inactive"}
    assert {rule["health"] for rule in copy.values()} == {"ok"}

    # WHEN it holds 320 MB
    stack.go_file.touch()

    # THEN both copies fire for it, and the shipped 1000 MB rule stays quiet
    for name in ("ProcessRSSWarning", "ProcessRSSNearLimit"):
        alert = wait_for(
            lambda name=name: (a := stack.alert(name, "holder", copy="test"))
            and a["state"] == "firing"
            and a,
            30,
            f"{name} firing ({stack.apps['holder'].output()})",
        )
        assert alert["labels"]["severity"] == "warning"
    shipped = [a for a in stack.alerts() if "copy" not in a["labels"]]
    assert not [a for a in shipped if a["labels"]["alertname"].startswith("ProcessRSS")]


# --------------------------------------------------------------------------- (c) leak alert


def test_the_leak_alert_fires_on_the_leak_and_stays_inactive_on_the_stock_service(stack):
    remaining = LEAK_TIMEOUT - (time.monotonic() - stack.started)
    alert = wait_for(
        lambda: (a := stack.alert("PythonHeapLeakSuspects", "leaker")) and a["state"] == "firing"
        and a,
        max(remaining, 5),
        f"the leak alert on the leaker ({stack.apps['leaker'].output()})",
    )  # fmt: skip
    assert alert["labels"]["severity"] == "warning"
    # the suspect set may change from one snapshot to the next: any time in the run counts
    streaks = stack.query('max_over_time(python_heap_growth_streak{job="leaker"}[10m])')
    assert "leak_demo.Message" in {series["metric"]["python_type"] for series in streaks}

    # The service ran with the profiler on for 4 profiling intervals (its suspects gauge scraped
    # every second; the leak is named in 2 now, without waiting for full collections) and never
    # had an active leak alert.
    wait_for(
        lambda: stack.query('count_over_time(python_heap_leak_suspects{job="service"}[10m]) > 40'),
        LEAK_TIMEOUT,
        f"40 s of the service's suspects gauge ({stack.apps['service'].output()})",
    )
    assert stack.apps["service"].process.poll() is None, stack.apps["service"].output()
    suspected = stack.query('max_over_time(python_heap_growth_streak{job="service"}[10m])')
    assert stack.query('max_over_time(python_heap_leak_suspects{job="service"}[10m]) > 0') == [], (
        "false leak suspects on the stock async_service: "
        + ", ".join(sorted(series["metric"]["python_type"] for series in suspected))
    )
    assert stack.query('ALERTS{alertname="PythonHeapLeakSuspects", job="service"}[10m]') == []


# --------------------------------------------------------------------------- (d) dashboard


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CONFIG_DIR / "grafana/dashboards/otel-memory.json").read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == "prometheus"
    ]


def test_every_dashboard_query_returns_data(stack):
    variable = 'label_values(process_memory_usage_bytes, job)'
    dashboard = json.loads((CONFIG_DIR / "grafana/dashboards/otel-memory.json").read_text())
    assert [v["definition"] for v in dashboard["templating"]["list"]] == [variable]
    values = f"{stack.prometheus_url}/api/v1/label/job/values?match[]=process_memory_usage_bytes"
    wait_for(
        lambda: set(json.loads(get(values))["data"]) == {"holder", "leaker", "service"},
        30,
        "the service variable's values: every app",
    )

    queries = dashboard_queries()
    assert len(queries) >= 12
    # Grafana's variables as Grafana would fill them: all services, a rate window
    waiting = {expr: expr.replace("$service", ".*").replace("$__rate_interval", "1m")
               for expr in queries}  # fmt: skip
    deadline = time.monotonic() + 40
    while waiting and time.monotonic() < deadline:
        waiting = {expr: promql for expr, promql in waiting.items() if not stack.query(promql)}
        time.sleep(0.5 if waiting else 0)
    assert not waiting, f"no data for {list(waiting)}"


def test_the_names_here_are_the_modules_names():
    """OUR_PROMETHEUS_NAMES is every instrument of the metrics module, in Prometheus form."""
    assert len(OUR_PROMETHEUS_NAMES) == len(m.METRIC_NAMES)
