"""``otel-memory report``: one self-contained page whose chart data agrees with the numbers.

What the browser does with the page is in ``test_report_browser.py``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path

from report_logs import three_day_log
from test_cli_analyze import SEED_LINES, line, write_log

from otel_memory.cli import main
from otel_memory.cli.report import MAX_BUCKETS, UPLOT_VERSION
from otel_memory.cli.series import OTHER_TASKS, SERIES, Bands, Downsampler

ASSETS = Path(__file__).parent.parent / "otel_memory" / "cli" / "assets"


def render(tmp_path: Path, capsys, *args: str) -> tuple[str, dict]:
    out = tmp_path / "report.html"
    assert main(["report", *args, "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page,
                      re.DOTALL)  # fmt: skip
    return page, json.loads(found.group(1)) if found else {}


def test_report_is_self_contained(tmp_path, capsys):
    log = write_log(tmp_path / "memory_20251116.log", SEED_LINES)
    page, _ = render(tmp_path, capsys, str(log))
    assert page.startswith("<!DOCTYPE html>")
    for remote in ("<link", "src=", "url(", "@import", "fetch(", "XMLHttpRequest"):
        assert remote not in page
    # The only addresses are the library's home, in its banner comment, and none is loaded.
    assert set(re.findall(r"https?://[^\s\"')]+", page)) == {"https://github.com/leeoniya/uPlot"}
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == ['<script type="application/json" id="chart-data">', "<script>", "<script>"]
    # uPlot inline, unmodified, with its MIT licence beside it, and the page says so.
    assert (ASSETS / "uPlot.iife.min.js").read_text() in page
    assert (ASSETS / "uPlot.min.css").read_text() in page
    assert (ASSETS / "uPlot.LICENSE").read_text() in page
    assert f"uPlot {UPLOT_VERSION}" in page and "MIT licence" in page


def test_vendored_uplot_matches_its_pinned_version():
    banner = (ASSETS / "uPlot.iife.min.js").read_text()[:80]
    assert f"(v{UPLOT_VERSION})" in banner
    assert "Permission is hereby granted, free of charge" in (ASSETS / "uPlot.LICENSE").read_text()
    assert UPLOT_VERSION in (ASSETS / "README.md").read_text()


def test_chart_data_and_tables_carry_the_numbers(tmp_path, capsys):
    log = write_log(tmp_path / "memory_20251116.log", SEED_LINES)
    page, data = render(tmp_path, capsys, str(log), "--warning-mb", "250", "--critical-mb", "500")

    # One row per line, in time order, every value as the log wrote it.
    t0 = data["times"][0]
    assert [t - t0 for t in data["times"]] == [0, 120, 255, 405, 480]
    assert data["rss"] == [245.3, 267.8, 598.4, 289.1, 234.2]
    assert data["vms"] == [512.1, 534.2, 812.7, 545.8, 498.3]
    assert data["available"] == [1024.5, 1001.2, 725.3, 989.7, 1043.8]
    assert data["lines"] == 5
    assert {name: data["colours"][name] for name in SERIES}

    assert [(th["name"], th["mb"]) for th in data["thresholds"]] == [
        ("warning", 250.0), ("critical", 500.0), ("available-min", 500.0),
    ]  # fmt: skip
    # The task ran from its START to the END that closed it.
    assert data["tasks"] == ["Nations Dump Download"]
    assert [b[:3] for b in data["bands"]] == [[0, t0, t0 + 405]]
    # Peaks are marked where the table lists them.
    assert data["peaks"][0] == {"rank": 1, "t": t0 + 255, "mb": 598.4,
                                "task": "Nations Dump Processing"}  # fmt: skip

    tables = [ET.fromstring(t) for t in re.findall(r'<table class="analysis">.*?</table>', page,
                                                    re.DOTALL)]  # fmt: skip
    rows = {
        (row[0].text or ""): [c.text for c in row] for table in tables for row in table.iter("tr")
    }
    assert rows["Nations Dump Download"][1:4] == ["2", "256.6", "245.3"]
    assert rows["RSS warning"][2:4] == ["0:06:00", "3"]
    assert rows["1"][1] == "598.4"
    assert "5 lines, every one drawn." in page


def test_script_data_cannot_break_out_of_its_element(tmp_path, capsys):
    evil = "</script><script>alert(1)</script><!--"
    lines = [
        line("2025-11-16 08:30:00", ">>>", evil, 200),
        line("2025-11-16 08:32:00", "<<<", evil, 210),
    ]
    log = write_log(tmp_path / "memory_20251116.log", lines)
    page, data = render(tmp_path, capsys, str(log), "--title", "a <b> & \udcff title")
    assert data["tasks"] == [evil]
    assert "<script>alert(1)" not in page
    assert "<title>a &lt;b&gt; &amp; ? title</title>" in page


def test_large_logs_stay_small_and_keep_their_spikes(tmp_path, capsys):
    lines = []
    for i in range(12_000):
        stamp = f"{datetime(2025, 11, 16) + timedelta(minutes=2 * i):%Y-%m-%d %H:%M:%S}"
        dip = 700 if i == 4242 else 0
        lines.append(
            line(
                stamp,
                "---",
                "Idle",
                200 + (i % 97) + (900 if i == 7777 else 0),
                available=1000 - dip,
            )
        )
    log = write_log(tmp_path / "big.log", lines)
    page, data = render(tmp_path, capsys, str(log))
    rss = [v for v in data["rss"] if v is not None]
    available = [v for v in data["available"] if v is not None]
    assert len(rss) <= 2 * MAX_BUCKETS and len(available) <= 2 * MAX_BUCKETS
    assert len(rss) < 12_000
    assert data["lines"] == 12_000
    # The single spike and the single dip survive downsampling, at their own times.
    spike = data["rss"].index(max(rss))
    assert max(rss) == 200 + 7777 % 97 + 900
    assert data["times"][spike] == data["times"][0] + 7777 * 120
    assert min(available) == 300
    assert data["times"][data["available"].index(300)] == data["times"][0] + 4242 * 120
    assert min(rss) == 200
    assert "12,000 lines drawn as" in page
    assert len(page) < 500_000


def test_months_of_logs_with_thousands_of_runs_stay_under_two_megabytes(tmp_path, capsys):
    # 90 days, a line every 2 minutes, a short task every 10 minutes: 64,800 lines, 12,960 runs.
    lines = []
    for i in range(64_800):
        minute = i * 2
        day, rest = divmod(minute, 1440)
        stamp = f"2025-{9 + day // 30:02d}-{1 + day % 30:02d} {rest // 60:02d}:{rest % 60:02d}:00"
        marker = (">>>", "<<<", "---", "---", "---")[i % 5]
        lines.append(
            line(stamp, marker, f"Job {i // 5 % 40}" if marker != "---" else "Idle", 200 + i % 50)
        )
    log = write_log(tmp_path / "months.log", lines)
    page, data = render(tmp_path, capsys, str(log))
    assert len(page.encode()) < 2 * 1024 * 1024
    assert len(data["bands"]) <= 1000
    assert sum(b[4] for b in data["bands"]) == 12_960  # merged, none lost


def test_three_days_of_daily_logs_make_one_chart(tmp_path, capsys):
    logs = three_day_log(tmp_path)
    _, data = render(tmp_path, capsys, str(tmp_path))
    assert len(logs) == 3
    # Every 6-second refresh is a band of its own: short runs are not lost at this scale.
    refreshes = [b for b in data["bands"] if data["tasks"][b[0]] == "Cache Refresh"]
    assert len(refreshes) == 3 * 48  # every 30 minutes
    assert all(b[2] - b[1] == 6 for b in refreshes)
    assert data["times"][-1] - data["times"][0] == 3 * 86400 - 120


def test_empty_selection_still_writes_a_page(tmp_path, capsys):
    log = write_log(tmp_path / "memory_20251116.log", SEED_LINES)
    page, data = render(tmp_path, capsys, str(log), "--since", "2030-01-01")
    assert "no memory lines to chart" in page
    assert data == {}
    assert "<script" not in page


# --------------------------------------------------------------------------- series


def columns(samples: Downsampler, max_gap: float) -> list[tuple]:
    found = samples.columns(max_gap)
    return list(zip(found.times, *found.values, strict=True))


def test_downsampler_keeps_extremes_and_bounds():
    samples = Downsampler(max_buckets=50)
    for i in range(10_000):
        samples.add(float(i), float(i % 100), 0.0, -float(i % 13))
    assert samples.count == 10_000
    found = samples.columns(max_gap=5)
    assert found.times == sorted(found.times)
    rss, vms, available = ([v for v in column if v is not None] for column in found.values)
    assert max(len(rss), len(vms), len(available)) <= 100
    assert (min(rss), max(rss)) == (0.0, 99.0)
    assert min(available) == -12.0
    assert samples.time_range == (0.0, 9999.0)


def test_downsampler_keeps_the_order_of_a_dip_and_a_spike():
    samples = Downsampler(max_buckets=2, initial_width=100.0)
    for t, rss in ((0, 50.0), (10, 900.0), (20, 40.0), (30, 60.0)):  # spike, then dip
        samples.add(float(t), rss, 0.0, 0.0)
    for t, rss in ((100, 50.0), (110, 10.0), (120, 800.0)):  # dip, then spike
        samples.add(float(t), rss, 0.0, 0.0)
    # Each at its own time, so hovering a spike shows when it happened.
    assert [(t, rss) for t, rss, *_ in columns(samples, max_gap=240) if rss is not None] == [
        (10, 900.0), (20, 40.0), (110, 10.0), (120, 800.0),
    ]  # fmt: skip


def test_downsampler_breaks_lines_at_gaps():
    samples = Downsampler()
    for t in (0, 120, 240, 10_000, 10_120):
        samples.add(float(t), 1.0, 2.0, 3.0)
    assert columns(samples, max_gap=240) == [
        (0, 1.0, 2.0, 3.0), (120, 1.0, 2.0, 3.0), (240, 1.0, 2.0, 3.0),
        (5120, None, None, None),
        (10_000, 1.0, 2.0, 3.0), (10_120, 1.0, 2.0, 3.0),
    ]  # fmt: skip


def test_one_instant_shows_the_worse_value_of_each_series():
    samples = Downsampler()
    samples.add(5.0, 100.0, 300.0, 900.0)  # END and START in the same second
    samples.add(5.0, 150.0, 280.0, 950.0)
    assert columns(samples, max_gap=240) == [(5.0, 150.0, 300.0, 900.0)]


def test_bands_merge_when_too_many():
    bands = Bands(limit=10, initial_width=1.0)
    for i in range(1000):
        bands.add("Job", i * 10.0, i * 10.0 + 5, "end")
    bands.add("Other", 3.0, 4.0, "end")
    found = bands.bands()
    assert len(found) <= 10
    job = [b for b in found if b.task == "Job"]
    assert job[0].start == 0.0
    assert max(b.end for b in job) == 9995.0
    assert sum(b.runs for b in job) == 1000
    assert [(b.task, b.runs, b.reason) for b in found if b.task == "Other"] == [("Other", 1, "end")]
    # Spread over the whole time, not one band from the first run to the last.
    assert len(job) >= 5
    assert all(b.end - b.start < 5000 for b in job)


def test_bands_of_too_many_task_names_share_a_name():
    bands = Bands(limit=50)
    for i in range(600):  # 600 names, one run each: merging alone cannot help
        bands.add(f"Import {i}", i * 100.0, i * 100.0 + 5)
    found = bands.bands()
    assert len(found) <= 50
    assert sum(b.runs for b in found) == 600
    assert OTHER_TASKS in {b.task for b in found}
