"""A real Prometheus for end-to-end tests: Debian's ``prometheus`` binary on loopback.

    with running_prometheus(work_dir, {"scrape_configs": [...]}) as prometheus:
        wait_for(lambda: prometheus.query("up == 1"), 30, "a target up")
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from http_helpers import free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = check()
        except (OSError, ValueError, KeyError) as exc:  # not up yet, or not scraped yet
            last_error, found = exc, None
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})")


@dataclass
class Prometheus:
    url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (fails the test on a PromQL error)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        body = json.loads(get(url))
        assert body["status"] == "success", (promql, body)
        return list(body["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets, with their labels, health and last error."""
        return list(json.loads(get(f"{self.url}/api/v1/targets"))["data"]["activeTargets"])


@contextmanager
def running_prometheus(work: Path, config: dict[str, Any]) -> Iterator[Prometheus]:
    """Prometheus with ``config`` written to ``work/prometheus.yml``, ready, stopped at the end."""
    assert PROMETHEUS is not None
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=(work / "prometheus.out").open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(f"{url}/-/ready"), 30, "Prometheus to be ready")
        yield Prometheus(url)
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
