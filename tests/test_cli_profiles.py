"""``otel-memory profiles``: the list of saved allocation profiles, the flame graph page (checked in
a real headless Chromium) and the CLI's habits (no overwrite without --force, exit 2 with one
line, no traceback), without OpenTelemetry or psutil loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from chromium import Chromium, find_chromium, png_pixels

from otel_memory.cli import main
from otel_memory.sinks.profiles import FunctionNames, TaskProfile, build_pprof, write_pprof

MB = 1_048_576
HERE = os.path.abspath(__file__)
SPAN = 0x00F067AA0BA902B7
TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def _line(marker: str) -> int:
    with open(__file__, encoding="utf-8") as source:
        return next(n for n, text in enumerate(source, 1) if text.rstrip().endswith(marker))


def load_rows() -> None:
    pass  # LOAD ROWS


def render_dump() -> None:
    pass  # RENDER DUMP


def nightly() -> None:
    load_rows()  # CALLS LOAD
    render_dump()  # CALLS RENDER


def _save(folder: Path, task: str, end_ns: int, span_id: int, scale: int = 1) -> Path:
    """A profile as the monitor writes it: render_dump 120 MB, load_rows 30 MB, under nightly."""
    root = (HERE, _line("# ROOT"))
    stacks = (
        (((HERE, _line("# RENDER DUMP")), (HERE, _line("# CALLS RENDER")), root),
         120 * MB * scale, 3),
        (((HERE, _line("# LOAD ROWS")), (HERE, _line("# CALLS LOAD")), root), 30 * MB * scale,
         30_000),
    )
    profile = TaskProfile(task, TRACE, span_id, end_ns - 10**9, end_ns, stacks)
    names = FunctionNames()
    data = build_pprof(profile, [names.frames(stack) for stack, _, _ in stacks])
    return write_pprof(folder / "profiles", profile, data)


def _root() -> None:
    nightly()  # ROOT


@pytest.fixture
def log_dir(tmp_path) -> Path:
    _save(tmp_path, "Nations Dump Processing", 1_780_000_000 * 10**9, SPAN)
    _save(tmp_path, "Small Task", 1_780_000_100 * 10**9, 0x1111, scale=0)
    return tmp_path


def test_the_list_names_task_time_top_site_and_bytes(log_dir, capsys):
    assert main(["profiles", str(log_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "TASK", "STARTED", "TOP", "SITE", "BYTES"]
    first = lines[1]
    assert first.startswith("1   Nations Dump Processing")
    assert f"render_dump (test_cli_profiles.py:{_line('# RENDER DUMP')})" in first
    assert first.endswith("120.0 MB")
    assert lines[2].startswith("2   Small Task")


def test_json_lists_the_same(log_dir, capsys):
    assert main(["profiles", str(log_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["id"] for row in rows] == [1, 2]
    assert rows[0]["span_id"] == f"{SPAN:016x}" and rows[0]["trace_id"] == f"{TRACE:032x}"
    assert rows[0]["top_bytes"] == 120 * MB and rows[0]["total_bytes"] == 150 * MB
    assert rows[0]["task"] == "Nations Dump Processing"
    assert rows[0]["started"] == datetime.fromtimestamp(1_779_999_999).strftime("%Y-%m-%d %H:%M:%S")


def test_open_writes_the_page_and_never_overwrites_without_force(log_dir, tmp_path, capsys):
    page = tmp_path / "flame.html"
    assert main(["profiles", str(log_dir), "--open", "1", "-o", str(page)]) == 0
    text = page.read_text()
    assert "Allocations of Nations Dump Processing" in text and "render_dump" in text
    capsys.readouterr()
    assert main(["profiles", str(log_dir), "--open", f"{SPAN:016x}", "-o", str(page)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists; use --force" in err
    page.write_text("old")
    assert main(["profiles", str(log_dir), "--open", "2", "-o", str(page), "--force"]) == 0
    assert "Allocations of Small Task" in page.read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--open", "7"], "--open 7: no such profile (give a number 1-2"),
        (["-o", "x.html"], "-o and --force go with --open ID"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(log_dir, capsys, argv, message):
    assert main(["profiles", str(log_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_a_missing_folder_and_a_damaged_file(tmp_path, log_dir, capsys):
    assert main(["profiles", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    damaged = log_dir / "profiles" / "Broken_20260101-000000_0000000000000001.pb.gz"
    damaged.write_bytes(b"\x1f\x8b not gzip at all")
    assert main(["profiles", str(log_dir)]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and damaged.name in captured.err
    assert "Broken" not in captured.out and "Nations Dump Processing" in captured.out


def test_the_cli_loads_neither_opentelemetry_nor_psutil(log_dir, tmp_path):
    code = (
        "import sys; from otel_memory.cli import main; "
        f"assert main(['profiles', {str(log_dir)!r}, '--open', '1', '-o', "
        f"{str(tmp_path / 'p.html')!r}]) == 0; "
        "bad = [m for m in sys.modules if m.startswith('opentelemetry') or m == 'psutil']; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------------- Chromium


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_the_flame_graph_draws_zooms_and_highlights_in_chromium(log_dir, tmp_path):
    page_path = tmp_path / "flame.html"
    assert main(["profiles", str(log_dir), "--open", "1", "-o", str(page_path)]) == 0
    with Chromium.launch(width=1280, height=800) as browser:
        page = browser.open(page_path)
        assert page.errors() == []
        assert page.requests() == [page_path.resolve().as_uri()]  # nothing from the network
        # all > <module>-less root frame (_root) > nightly > render_dump | load_rows
        depth = page.evaluate(
            "window.flameGraph.frames().findIndex(f => f.startsWith('render_dump'))"
        )
        assert depth >= 0
        widest = page.evaluate("window.flameGraph.widest(3)")
        assert widest["label"].startswith("render_dump (test_cli_profiles.py:")
        full = page.evaluate("window.flameGraph.widest(0)")["w"]
        assert 0.78 < widest["w"] / full < 0.82  # 120 of 150 MB

        png = page.screenshot()
        directory = os.environ.get("OTEL_MEMORY_SCREENSHOTS")
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            (Path(directory) / "flame.png").write_bytes(png)
        _, _, channels, pixels = png_pixels(png)
        colours = {tuple(pixels[i : i + 3]) for i in range(0, len(pixels), channels)}
        assert len(colours) > 20  # frames drawn in their colours, not a blank page

        # a click on load_rows zooms to it: it fills the width
        box = page.evaluate(
            "(() => { const el = [...document.querySelectorAll('#flame .frame')]"
            ".find(e => e.textContent.startsWith('load_rows')); const r = el.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
        )
        page.click(box["x"], box["y"])
        assert page.evaluate("window.flameGraph.focus()").startswith("load_rows")
        assert page.evaluate("window.flameGraph.widest(3)")["w"] == full
        page.evaluate("document.getElementById('reset').click()")
        assert page.evaluate("window.flameGraph.focus()") == "all"

        # blocks instead of bytes: load_rows (30,000 blocks) is now the wider one
        page.evaluate(
            "(() => { const s = document.getElementById('kind'); s.value = '1';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        assert page.evaluate("window.flameGraph.widest(3)")["label"].startswith("load_rows")

        # search highlights matching frames only (back on bytes: 3 blocks are too thin to draw)
        page.evaluate(
            "(() => { const k = document.getElementById('kind'); k.value = '0';"
            " k.dispatchEvent(new Event('change'));"
            " const s = document.getElementById('search'); s.value = 'render';"
            " s.dispatchEvent(new Event('input')); })()"
        )
        marked = page.evaluate(
            "[...document.querySelectorAll('#flame .frame.match')].map(e => e.textContent)"
        )
        assert marked and all(text.startswith("render_dump") for text in marked)
