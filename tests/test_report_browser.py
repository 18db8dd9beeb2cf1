"""The report page in a real headless Chromium: it loads offline without errors, the chart
draws, and zoom, hover and the task lane work.

Needs Debian's ``chromium`` (``apt-get install chromium``); skipped, saying so, without it.
Set ``OTEL_MEMORY_SCREENSHOTS=DIR`` to keep the screenshots for a look.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest
from chromium import Chromium, Page, find_chromium, png_pixels
from report_logs import short_log, three_day_log
from test_cli_analyze import line, write_log

from otel_memory.cli import main

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="chromium is not installed (Debian: apt-get install chromium)",
)

RSS_BLUE = (0x1F, 0x5F, 0xBF)


@pytest.fixture(scope="module")
def browser():
    with Chromium.launch(width=1280, height=1000) as running:
        yield running


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """The report of a 16-second log and of a 3-day log, and one with crowded thresholds."""
    root = tmp_path_factory.mktemp("reports")
    (root / "short").mkdir()
    (root / "long").mkdir()
    short_log(root / "short")
    three_day_log(root / "long")
    died = [  # an import that never ended: the process died after 08:04 and restarted at 10:00
        line("2025-11-16 08:00:00", ">>>", "Import", 300),
        line("2025-11-16 08:02:00", "---", "Import", 700),
        line("2025-11-16 08:04:00", "---", "Import", 900),
        line("2025-11-16 10:00:00", "---", "Monitor Started", 200),
        line("2025-11-16 10:02:00", "---", "Idle", 210),
        line("2025-11-16 10:04:00", "---", "Idle", 205),
    ]
    write_log(root / "died.log", died)
    write_log(root / "one.log", [line("2025-11-16 08:30:00", "---", "Idle", 245.3)])
    made = {
        "one": ["report", str(root / "one.log")],
        "died": ["report", str(root / "died.log")],
        "short": ["report", str(root / "short"), "--interval", "2"],
        "long": ["report", str(root / "long")],
        "crowded": ["report", str(root / "long"), "--warning-mb", "480", "--critical-mb", "505"],
    }
    for name, argv in made.items():
        assert main([*argv, "-o", str(root / f"{name}.html")]) == 0
    return {name: root / f"{name}.html" for name in made}


@pytest.fixture
def open_page(browser, pages):
    opened: list[Page] = []

    def load(name: str) -> Page:
        page = browser.open(pages[name])
        opened.append(page)
        return page

    yield load
    for page in opened:
        browser.send("Target.closeTarget", {"targetId": page.target})


def keep(name: str, png: bytes) -> None:
    directory = os.environ.get("OTEL_MEMORY_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.png").write_bytes(png)


def plot_box(page: Page) -> dict[str, float]:
    """The plot area (uPlot's overlay) in viewport CSS pixels, after scrolling it into view."""
    return page.evaluate(
        "(() => { const o = memoryReport.chart.over; o.scrollIntoView({block: 'center'});"
        " const r = o.getBoundingClientRect();"
        " return {x: r.left, y: r.top, width: r.width, height: r.height}; })()"
    )


def x_of(page: Page, t: float) -> float:
    """Viewport x of time ``t`` on the chart."""
    box = plot_box(page)
    return box["x"] + page.evaluate(f"memoryReport.chart.valToPos({t}, 'x')")


def x_range(page: Page) -> tuple[float, float]:
    return tuple(
        page.evaluate("[memoryReport.chart.scales.x.min, memoryReport.chart.scales.x.max]")
    )


@pytest.mark.parametrize("name", ["short", "long"])
def test_page_loads_offline_and_draws_the_chart(open_page, pages, name):
    page = open_page(name)
    assert page.errors() == []
    assert page.requests() == [pages[name].resolve().as_uri()]  # nothing from the network

    drawn = page.evaluate(
        """(() => {
        const canvas = document.querySelector('#chart .uplot canvas');
        const lane = document.querySelector('.task-lane canvas');
        return {
          canvas: [canvas.width, canvas.height],
          lane: [lane.width, lane.height],
          legend: [...document.querySelectorAll('.u-legend .u-series th')].map(e => e.innerText.trim()),
          rows: memoryReport.chart.data[0].length,
          expected: JSON.parse(document.getElementById('chart-data').textContent).times.length,
        };
      })()"""
    )
    assert drawn["canvas"][0] > 800 and drawn["canvas"][1] > 300
    assert drawn["lane"][0] > 800 and drawn["lane"][1] >= 16
    assert drawn["legend"] == ["time", "RSS", "VMS", "System available"]
    assert drawn["rows"] == drawn["expected"] > 0

    box = plot_box(page)
    png = page.screenshot(clip=box)
    keep(f"{name}-plot", png)
    keep(name, page.screenshot(full_page=True))
    width, height, channels, pixels = png_pixels(png)
    assert (width, height) == (round(box["width"]), round(box["height"]))
    grey = pixels[::channels]
    assert statistics.pstdev(grey) > 20  # not a blank or uniform image
    # The RSS line is there, in its colour.
    rgb = {tuple(pixels[i : i + 3]) for i in range(0, len(pixels), channels)}
    assert any(sum(abs(a - b) for a, b in zip(c, RSS_BLUE, strict=True)) < 30 for c in rgb)


def test_a_sixteen_second_log_fills_the_width(open_page):
    page = open_page("short")
    data = page.evaluate("memoryReport.data")
    assert x_range(page) == (data["times"][0], data["times"][-1])
    assert data["times"][-1] - data["times"][0] == 16
    # First and last line at the plot's edges, the middle one in the middle.
    box = plot_box(page)
    positions = [x_of(page, t) - box["x"] for t in data["times"]]
    assert positions[0] == pytest.approx(0, abs=1)
    assert positions[-1] == pytest.approx(box["width"], abs=1)
    assert positions[4] == pytest.approx(box["width"] / 2, abs=1)


def test_a_lone_line_gets_a_minute_either_side(open_page):
    page = open_page("one")
    t = page.evaluate("memoryReport.data.times[0]")
    assert x_range(page) == (t - 60, t + 60)
    assert page.evaluate("document.querySelector('.task-lane').hidden") is True
    assert page.errors() == []


def test_hover_shows_time_values_and_task(open_page):
    page = open_page("long")
    data = page.evaluate("memoryReport.data")
    # A line of the sixth dump's Processing step, at its peak (900 MB).
    index = data["rss"].index(900.0)
    t = data["times"][index]
    box = plot_box(page)
    page.mouse("mouseMoved", x_of(page, t), box["y"] + box["height"] / 2)
    tooltip = page.evaluate("document.querySelector('.chart-tooltip').innerText")
    assert page.evaluate("document.querySelector('.chart-tooltip').hidden") is False
    assert "2025-11-17 07:03:00" in tooltip
    assert "900.0 MB" in tooltip
    assert f"{data['vms'][index]:,.1f} MB" in tooltip
    assert f"{data['available'][index]:,.1f} MB" in tooltip
    assert "Nations Dump Processing" in tooltip.splitlines()[-1]
    # Away from any task, it says so.
    quiet = data["times"].index(data["times"][0] + 3 * 3600)
    page.mouse("mouseMoved", x_of(page, data["times"][quiet]), box["y"] + 10)
    assert "none (idle)" in page.evaluate("document.querySelector('.chart-tooltip').innerText")


def test_drag_and_wheel_zoom_and_reset_restores(open_page):
    page = open_page("long")
    full = x_range(page)
    box = plot_box(page)
    y = box["y"] + box["height"] / 2
    page.drag((box["x"] + box["width"] * 0.4, y), (box["x"] + box["width"] * 0.5, y))
    low, high = x_range(page)
    assert (high - low) / (full[1] - full[0]) == pytest.approx(0.1, abs=0.01)

    centre = box["x"] + box["width"] * 0.5
    page.mouse("mouseWheel", centre, y, deltaX=0, deltaY=-100)
    wheel_low, wheel_high = x_range(page)
    assert (wheel_high - wheel_low) == pytest.approx((high - low) * 0.75, rel=0.01)
    assert low < wheel_low < wheel_high < high

    page.evaluate("document.getElementById('reset-zoom').click()")
    assert x_range(page) == full


def test_short_runs_stay_visible_and_a_click_zooms_to_one(open_page):
    page = open_page("long")
    bars = page.evaluate("memoryReport.laneBars()")
    refreshes = [b for b in bars if b["task"] == "Cache Refresh"]
    assert len(refreshes) == 144  # 6-second runs over 3 days: 0.02 px each, drawn 3 px wide
    assert min(b["right"] - b["left"] for b in bars) >= 3
    keep("long-lane", page.screenshot(clip=page.evaluate(
        "(() => { const r = document.querySelector('.task-lane').getBoundingClientRect();"
        " return {x: r.left, y: r.top, width: r.width, height: r.height}; })()"
    )))  # fmt: skip

    bar = refreshes[10]
    lane = page.evaluate(
        "(() => { const l = document.querySelector('.task-lane canvas');"
        " l.scrollIntoView({block: 'center'}); const r = l.getBoundingClientRect();"
        " return [r.left, r.top]; })()"
    )
    x = lane[0] + (bar["left"] + bar["right"]) / 2
    y = lane[1] + bar["row"] * 16 + 8
    page.mouse("mouseMoved", x, y)
    tooltip = page.evaluate("document.querySelector('.chart-tooltip').innerText")
    assert "Cache Refresh" in tooltip and "0:00:06" in tooltip
    page.click(x, y)
    low, high = x_range(page)
    assert high - low == pytest.approx(66, abs=1)  # the run and 30 s either side
    zoomed = [b for b in page.evaluate("memoryReport.laneBars()") if b["task"] == "Cache Refresh"]
    assert any(b["right"] - b["left"] > 50 for b in zoomed)


def test_threshold_labels_never_overlap(open_page):
    page = open_page("crowded")  # warning 480, critical 505, available minimum 500
    labels = page.evaluate("memoryReport.thresholdLabels()")
    assert {label["name"] for label in labels} == {"warning", "critical", "available-min"}
    canvas = page.evaluate(
        "(() => { const c = document.querySelector('#chart .uplot canvas');"
        " return [c.clientWidth, c.clientHeight]; })()"
    )
    for i, a in enumerate(labels):
        assert a["left"] >= 0 and a["right"] <= canvas[0]
        assert a["top"] >= 0 and a["bottom"] <= canvas[1]
        for b in labels[i + 1 :]:
            assert a["bottom"] <= b["top"] or b["bottom"] <= a["top"], (a, b)
    keep("crowded-plot", page.screenshot(clip=plot_box(page) | {"width": 1240}))


def test_a_time_in_the_tables_zooms_the_chart_there(open_page):
    page = open_page("long")
    link = page.evaluate(
        "(() => { const a = [...document.querySelectorAll('a.zoom-link')]"
        ".find(a => a.textContent === '2025-11-17 07:03:00'); a.click(); return !!a; })()"
    )
    assert link
    low, high = x_range(page)
    peak = page.evaluate("memoryReport.data.times[memoryReport.data.rss.indexOf(900)]")
    assert low < peak < high
    assert high - low < 4 * 3600
    assert page.errors() == []


def test_chart_data_is_what_the_page_embeds(open_page, pages):
    page = open_page("short")
    embedded = page.evaluate("memoryReport.data")
    text = pages["short"].read_text(encoding="utf-8")
    start = text.index('id="chart-data">') + len('id="chart-data">')
    assert json.loads(text[start : text.index("</script>", start)])["rss"] == embedded["rss"]


def test_a_run_that_never_ended_is_drawn_until_the_process_stopped(open_page):
    page = open_page("died")
    data = page.evaluate("memoryReport.data")
    assert [data["tasks"][b[0]] for b in data["bands"]] == ["Import"]
    assert data["bands"][0][3] == "unfinished"
    assert len(data["gaps"]) == 1  # the lines break where the process was gone
    (bar,) = page.evaluate("memoryReport.laneBars()")
    box = plot_box(page)
    started, last_line = data["times"][0], data["times"][2]  # 08:00 and 08:04
    assert bar["left"] == pytest.approx(x_of(page, started) - box["x"], abs=1)
    assert bar["right"] == pytest.approx(x_of(page, last_line) - box["x"], abs=1)
    lane = page.evaluate(
        "(() => { const r = document.querySelector('.task-lane canvas').getBoundingClientRect();"
        " return [r.left, r.top]; })()"
    )
    page.mouse("mouseMoved", lane[0] + (bar["left"] + bar["right"]) / 2, lane[1] + 8)
    tooltip = page.evaluate("document.querySelector('.chart-tooltip').innerText")
    assert "never" in tooltip and "2025-11-16 08:04:00" in tooltip
    assert page.errors() == []
