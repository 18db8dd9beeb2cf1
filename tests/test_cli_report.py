"""``otel-memory report``: one self-contained page whose SVG agrees with the numbers."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_cli_analyze import SEED_LINES, line, write_log

from otel_memory.cli import main
from otel_memory.cli.series import Bands, Downsampler

SVG = "{http://www.w3.org/2000/svg}"


def render(tmp_path: Path, capsys, *args: str) -> tuple[str, ET.Element]:
    out = tmp_path / "report.html"
    assert main(["report", *args, "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    svg = re.search(r"<svg.*?</svg>", page, re.DOTALL)
    assert svg is not None
    return page, ET.fromstring(svg.group(0))


def points(element: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in element.attrib["points"].split()]


def y_scale(svg: ET.Element) -> tuple[float, float]:
    """Intercept and slope of pixel y against MB, fitted on the y-axis ticks."""
    ticks = [
        (float(t.attrib["data-mb"]), float(t.attrib["y1"]))
        for t in svg.iter(f"{SVG}line")
        if t.attrib.get("class") == "tick" and "data-mb" in t.attrib
    ]
    assert len(ticks) >= 3
    (mb0, y0), (mb1, y1) = ticks[0], ticks[-1]
    slope = (y1 - y0) / (mb1 - mb0)
    for mb, y in ticks:  # every tick on the same straight line
        assert y == pytest.approx(y0 + slope * (mb - mb0), abs=0.1)
    return y0 - slope * mb0, slope


def test_report_is_self_contained(tmp_path, capsys):
    log = write_log(tmp_path / "memory_20251116.log", SEED_LINES)
    page, _ = render(tmp_path, capsys, str(log))
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page
    for remote in ("http://", "https://", "<script", "<link", "src="):
        assert remote not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_svg_structure_and_numbers(tmp_path, capsys):
    log = write_log(tmp_path / "memory_20251116.log", SEED_LINES)
    page, svg = render(tmp_path, capsys, str(log), "--warning-mb", "250", "--critical-mb", "500")
    intercept, slope = y_scale(svg)

    def y_of(mb: float) -> float:
        return intercept + slope * mb

    # Thresholds sit where the axis puts 250 and 500 MB.
    thresholds = {
        t.attrib["class"].split()[1]: t for t in svg.iter(f"{SVG}line")
        if t.attrib.get("class", "").startswith("threshold")
    }  # fmt: skip
    assert set(thresholds) == {"warning", "critical", "available-min"}
    assert float(thresholds["warning"].attrib["y1"]) == pytest.approx(y_of(250), abs=0.1)
    assert float(thresholds["critical"].attrib["y1"]) == pytest.approx(y_of(500), abs=0.1)
    assert float(thresholds["available-min"].attrib["y1"]) == pytest.approx(y_of(500), abs=0.1)

    # One unbroken polyline per series, one point per line, in time order, at the right height.
    lines = {
        name: [p for p in svg.iter(f"{SVG}polyline") if p.attrib["class"] == f"series {name}"]
        for name in ("rss", "vms", "available")
    }
    assert {name: len(found) for name, found in lines.items()} == {
        "rss": 1, "vms": 1, "available": 1,
    }  # fmt: skip
    rss = points(lines["rss"][0])
    assert len(rss) == 5
    assert [x for x, _ in rss] == sorted(x for x, _ in rss)
    expected_rss = [245.3, 267.8, 598.4, 289.1, 234.2]
    for (_, y), mb in zip(rss, expected_rss, strict=True):
        assert y == pytest.approx(y_of(mb), abs=0.1)
    available = points(lines["available"][0])
    assert available[2][1] == pytest.approx(y_of(725.3), abs=0.1)

    # The task band spans START (first point) to END (fourth point).
    bands = [r for r in svg.iter(f"{SVG}rect") if r.attrib.get("class") == "task-band"]
    assert [b.attrib["data-task"] for b in bands] == ["Nations Dump Download"]
    left = float(bands[0].attrib["x"])
    right = left + float(bands[0].attrib["width"])
    assert left == pytest.approx(rss[0][0], abs=0.1)
    assert right == pytest.approx(rss[3][0], abs=0.1)
    # 405 s of a 480 s range on the plot width.
    assert (right - left) / (rss[4][0] - rss[0][0]) == pytest.approx(405 / 480, abs=1e-3)

    # The tables carry the analysis numbers.
    tables = [ET.fromstring(t) for t in re.findall(r'<table class="analysis">.*?</table>', page,
                                                    re.DOTALL)]  # fmt: skip
    rows = {
        (row[0].text or ""): [c.text for c in row] for table in tables for row in table.iter("tr")
    }
    assert rows["Nations Dump Download"][1:8] == ["2", "256.6", "245.3", "267.8", "1", "+43.8",
                                                  "+43.8"]  # fmt: skip
    assert rows["RSS warning"][2:4] == ["0:06:00", "3"]
    assert rows["1"][1] == "598.4"


def test_series_stay_bounded_for_large_logs(tmp_path, capsys):
    lines = []
    for i in range(12_000):
        minute = i * 2
        stamp = f"2025-11-{16 + minute // 1440:02d} {minute // 60 % 24:02d}:{minute % 60:02d}:00"
        lines.append(line(stamp, "---", "Idle", 200 + (i % 97) + (900 if i == 7777 else 0)))
    log = write_log(tmp_path / "big.log", lines)
    page, svg = render(tmp_path, capsys, str(log))
    rss = [pt for p in svg.iter(f"{SVG}polyline") if p.attrib["class"] == "series rss"
           for pt in points(p)]  # fmt: skip
    assert len(rss) <= 2000
    # The single spike survives downsampling.
    intercept, slope = y_scale(svg)
    assert min(y for _, y in rss) == pytest.approx(intercept + slope * (200 + 7777 % 97 + 900),
                                                   abs=0.1)  # fmt: skip
    assert len(page) < 400_000


def test_empty_selection_still_writes_a_page(tmp_path, capsys):
    log = write_log(tmp_path / "memory_20251116.log", SEED_LINES)
    page, svg = render(tmp_path, capsys, str(log), "--since", "2030-01-01")
    assert "no memory lines to chart" in page
    assert svg.tag == f"{SVG}svg"


def test_downsampler_keeps_extremes_and_bounds():
    samples = Downsampler(max_buckets=50)
    for i in range(10_000):
        samples.add(float(i), float(i % 100), 0.0, -float(i % 13))
    assert samples.count == 10_000
    for series in range(3):
        flat = [p for segment in samples.points(series, max_gap=5) for p in segment]
        assert len(flat) <= 100
    rss = [v for segment in samples.points(0, max_gap=5) for _, v in segment]
    assert (min(rss), max(rss)) == (0.0, 99.0)
    assert samples.time_range == (0.0, 9999.0)


def test_downsampler_breaks_lines_at_gaps():
    samples = Downsampler()
    for t in (0, 120, 240, 10_000, 10_120):
        samples.add(float(t), 1.0, 1.0, 1.0)
    assert [len(s) for s in samples.points(0, max_gap=240)] == [3, 2]


def test_bands_merge_when_too_many():
    bands = Bands(limit=10, initial_gap=1.0)
    for i in range(1000):
        bands.add("Job", i * 10.0, i * 10.0 + 5)
    bands.add("Other", 3.0, 4.0)
    found = bands.bands()
    assert len(found) <= 10
    job = [b for b in found if b.task == "Job"]
    assert job[0].start == 0.0
    assert max(b.end for b in job) == 9995.0
    assert any(b.task == "Other" for b in found)
