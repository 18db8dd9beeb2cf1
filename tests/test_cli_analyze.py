"""``otel-memory analyze``: golden numbers on seed 003's example lines, inputs, filters, errors."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from otel_memory.cli import main
from otel_memory.cli.reading import Progress, progress_for, resolve_inputs

# The five example lines of seed 003 ("Example Log Entries").
SEED_LINES = [
    "2025-11-16 08:30:00 >>> TASK START [Nations Dump Download] | RSS:  245.3 MB | VMS:  512.1 MB | System Available: 1024.5 MB (50.2% free)",
    "2025-11-16 08:32:00 --- [Nations Dump Download] | RSS:  267.8 MB | VMS:  534.2 MB | System Available: 1001.2 MB (49.1% free)",
    "2025-11-16 08:34:15 --- [Nations Dump Processing] | RSS:  598.4 MB | VMS:  812.7 MB | System Available:  725.3 MB (35.6% free)",
    "2025-11-16 08:36:45 <<< TASK END [Nations Dump Complete] | RSS:  289.1 MB | VMS:  545.8 MB | System Available:  989.7 MB (48.6% free)",
    "2025-11-16 08:38:00 --- [Idle] | RSS:  234.2 MB | VMS:  498.3 MB | System Available: 1043.8 MB (51.3% free)",
]


def line(stamp: str, marker: str, name: str, rss: float, available: float = 1000.0) -> str:
    """One log line; ``marker`` is ``>>>``, ``<<<`` or ``---``."""
    opening = {">>>": ">>> TASK START", "<<<": "<<< TASK END", "---": "---"}[marker]
    free = available / 20.48
    return (
        f"{stamp} {opening} [{name}] | RSS: {rss:6.1f} MB | VMS: {rss + 250:6.1f} MB"
        f" | System Available: {available:6.1f} MB ({free:.1f}% free)"
    )


def write_log(path: Path, lines: list[str], compress: bool = False) -> Path:
    text = "".join(f"{x}\n" for x in lines)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def seed_log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "memory_20251116.log", SEED_LINES)


def analyze_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["analyze", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_seed_lines_golden_numbers(seed_log, capsys):
    result = analyze_json(capsys, str(seed_log), "--warning-mb", "250", "--critical-mb", "500")

    assert result["lines"] == {
        "total": 5, "parsed": 5, "selected": 5, "blank": 0, "malformed": 0, "malformed_at": [],
    }  # fmt: skip
    assert (result["first"], result["last"]) == ("2025-11-16 08:30:00", "2025-11-16 08:38:00")
    # Peaks: one line per task run or plateau. Lines 1-4 are the Download run (the END closes
    # it; the "Processing" line came while it was the open run), line 5 an idle plateau.
    assert [p["rss_mb"] for p in result["peaks"]] == [598.4, 234.2]
    assert result["peaks"][0]["task"] == "Nations Dump Processing"
    assert result["peaks"][0]["marker"] == "CHECK"
    assert result["peaks"][0]["line"] == 3
    assert result["peaks"][1]["marker"] == "CHECK"

    tasks = {t["task"]: t for t in result["tasks"]}
    # The END line's brackets hold the label, so it forms its own row, as in the seed's script.
    assert set(tasks) == {
        "Nations Dump Download", "Nations Dump Processing", "Nations Dump Complete", "Idle",
    }  # fmt: skip
    download = tasks["Nations Dump Download"]
    # Lines 1 and 2: (245.3 + 267.8) / 2 = 256.55; min 245.3; max 267.8.
    assert download["lines"] == 2
    assert download["rss_avg_mb"] == pytest.approx(256.55)
    assert (download["rss_min_mb"], download["rss_max_mb"]) == (245.3, 267.8)
    # START (245.3 at 08:30:00) pairs with END (289.1 at 08:36:45): +43.8 MB over 405 s,
    # the seed's "Peak increase: 43.8 MB".
    assert download["runs"] == 1
    assert download["delta_avg_mb"] == pytest.approx(43.8)
    assert download["delta_max_mb"] == pytest.approx(43.8)
    assert download["duration_avg_seconds"] == 405
    assert tasks["Nations Dump Processing"]["rss_max_mb"] == 598.4
    assert tasks["Nations Dump Complete"]["runs"] == 0
    assert tasks["Idle"]["lines"] == 1

    # Above 250 MB: 267.8 at 08:32:00 (until 08:34:15: 135 s), 598.4 at 08:34:15 (until
    # 08:36:45: 150 s), 289.1 at 08:36:45 (until 08:38:00: 75 s) = 360 s over 3 lines.
    warning = result["rss_warning"]
    assert (warning["seconds"], warning["lines"]) == (360, 3)
    assert (warning["first"], warning["last"]) == ("2025-11-16 08:32:00", "2025-11-16 08:36:45")
    # Above 500 MB: only 598.4, for 150 s.
    assert (result["rss_critical"]["seconds"], result["rss_critical"]["lines"]) == (150, 1)
    # Nothing under 500 MB available or 25 % free.
    assert result["system_available_low"]["seconds"] == 0
    assert result["system_free_low"]["lines"] == 0
    assert result["lowest_available_mb"] == {
        "value": 725.3, "timestamp": "2025-11-16 08:34:15", "task": "Nations Dump Processing",
    }  # fmt: skip
    assert result["lowest_free_percent"]["value"] == 35.6
    assert result["idle_trend"]["verdict"] == "insufficient data"
    assert (result["unmatched_starts"], result["unmatched_ends"]) == (0, 0)


def test_default_thresholds_come_from_config(seed_log, capsys):
    result = analyze_json(capsys, str(seed_log))
    assert result["settings"]["warning_mb"] == 1000
    assert result["settings"]["critical_mb"] == 1500
    assert result["rss_warning"]["seconds"] == 0


def test_config_file_sets_thresholds_and_interval(seed_log, tmp_path, capsys):
    config = tmp_path / "memory.yaml"
    config.write_text(
        "general:\n  monitoring:\n    memory_monitor:\n      interval_seconds: 60\n"
        "      thresholds:\n        rss_warning_mb: 250\n        rss_critical_mb: 500\n"
    )
    result = analyze_json(capsys, str(seed_log), "--config", str(config))
    # A line stands for at most 2 x 60 = 120 s: 135 -> 120, 150 -> 120, 75 = 315 s.
    assert result["settings"]["max_seconds_per_line"] == 120
    assert result["rss_warning"]["seconds"] == 315
    assert result["rss_critical"]["seconds"] == 120


def test_bad_config_is_a_clear_error(seed_log, tmp_path, capsys):
    config = tmp_path / "memory.yaml"
    config.write_text("general:\n  monitoring:\n    memory_monitor:\n      interval_seconds: 0\n")
    assert main(["analyze", str(seed_log), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "interval_seconds must be >= 1" in err
    assert "Traceback" not in err


def test_text_output_names_every_section(seed_log, capsys):
    assert main(["analyze", str(seed_log), "--top", "2"]) == 0
    out = capsys.readouterr().out
    for title in ("Summary", "Top 2 peaks by RSS", "Memory by task", "Time beyond thresholds",
                  "Lowest system memory", "Idle RSS trend"):  # fmt: skip
        assert title in out
    assert "+43.8" in out
    assert "0:06:45" in out  # the Download run took 405 s


def test_json_keys_are_stable(seed_log, capsys):
    result = analyze_json(capsys, str(seed_log))
    assert list(result) == [
        "files", "lines", "first", "last", "settings", "peaks", "tasks", "rss_warning",
        "rss_critical", "system_available_low", "system_free_low", "lowest_available_mb",
        "lowest_free_percent", "idle_trend", "unmatched_starts", "unmatched_ends",
    ]  # fmt: skip
    assert list(result["peaks"][0]) == ["rss_mb", "timestamp", "marker", "task", "file", "line",
                                        "text"]  # fmt: skip
    assert list(result["idle_trend"]) == [
        "lines", "slope_mb_per_hour", "r_squared", "span_hours", "growth_mb", "verdict",
        "message", "daily_averages_rising", "days",
    ]  # fmt: skip


def test_gzip_input_gives_the_same_result(tmp_path, capsys):
    plain = write_log(tmp_path / "memory_20251116.log", SEED_LINES)
    (tmp_path / "archive").mkdir()
    packed = write_log(tmp_path / "archive" / "memory_20251116.log.gz", SEED_LINES, compress=True)
    from_plain = analyze_json(capsys, str(plain))
    from_gzip = analyze_json(capsys, str(packed))
    for key in ("lines", "peaks", "tasks", "rss_warning", "idle_trend"):
        if key == "peaks":
            assert [p["rss_mb"] for p in from_plain[key]] == [p["rss_mb"] for p in from_gzip[key]]
        else:
            assert from_plain[key] == from_gzip[key]


def test_directory_reads_daily_logs_in_date_order_and_prefers_plain_over_archive(
    tmp_path, capsys
):
    write_log(tmp_path / "memory_20251116.log", [line("2025-11-16 00:03:00", "<<<", "Done", 300)])
    write_log(
        tmp_path / "memory_20251115.log",
        [line("2025-11-15 23:58:00", ">>>", "Nightly", 200)],
    )
    # An archive of the same day as a plain log (archiving interrupted): read only once.
    write_log(
        tmp_path / "memory_20251115.log.gz",
        [line("2025-11-15 23:58:00", ">>>", "Nightly", 200)],
        compress=True,
    )
    (tmp_path / "notes.txt").write_text("not a log\n")
    result = analyze_json(capsys, str(tmp_path))
    assert [Path(f).name for f in result["files"]] == ["memory_20251115.log", "memory_20251116.log"]
    # The task crosses midnight: one stream, so START and END pair across the two files.
    nightly = next(t for t in result["tasks"] if t["task"] == "Nightly")
    assert nightly["runs"] == 1
    assert nightly["duration_max_seconds"] == 300
    assert nightly["delta_max_mb"] == pytest.approx(100)


def test_glob_pattern(tmp_path, capsys):
    for day in ("20251114", "20251115"):
        stamp = f"{day[:4]}-{day[4:6]}-{day[6:]} 10:00:00"
        write_log(tmp_path / f"memory_{day}.log", [line(stamp, "---", "Idle", 200)])
    result = analyze_json(capsys, str(tmp_path / "memory_2025111*.log"))
    assert result["lines"]["parsed"] == 2
    assert main(["analyze", str(tmp_path / "nothing_*.log")]) == 2
    assert "no file matches" in capsys.readouterr().err


def test_missing_file_is_exit_2_naming_the_path(tmp_path, capsys):
    missing = tmp_path / "memory_20990101.log"
    assert main(["analyze", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "no such file" in err
    assert "Traceback" not in err


def test_truncated_gzip_is_a_clear_error(tmp_path, capsys):
    packed = write_log(tmp_path / "memory_20251116.log.gz", SEED_LINES * 50, compress=True)
    packed.write_bytes(packed.read_bytes()[:60])
    assert main(["analyze", str(packed)]) == 2
    assert str(packed) in capsys.readouterr().err


def test_malformed_lines_are_counted_with_their_location(tmp_path, capsys):
    log = write_log(
        tmp_path / "memory_20251116.log",
        [
            SEED_LINES[0],
            "Traceback (most recent call last):",  # 2: not a memory line
            SEED_LINES[1],
            "",  # 4: blank, not malformed
            SEED_LINES[2].replace("2025-11-16", "2025-13-16"),  # 5: month 13
            SEED_LINES[3].replace("08:36:45", "08:36:60"),  # 6: second 60
            SEED_LINES[4].replace("RSS:  234.2", "RSS: abc"),  # 7
        ],
    )
    result = analyze_json(capsys, str(log))
    assert result["lines"]["total"] == 7
    assert result["lines"]["parsed"] == 2
    assert result["lines"]["blank"] == 1
    assert result["lines"]["malformed"] == 4
    assert result["lines"]["malformed_at"] == [f"{log}:{n}" for n in (2, 5, 6, 7)]
    assert main(["analyze", str(log)]) == 0
    assert f"4 malformed line(s) skipped, at {log}:2" in capsys.readouterr().out


def test_above_prints_matching_lines_like_grep(seed_log, capsys):
    assert main(["analyze", str(seed_log), "--above", "260"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{seed_log}:{n}:{SEED_LINES[n - 1]}" for n in (2, 3, 4)]
    assert main(["analyze", str(seed_log), "--above", "260", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in rows] == [2, 3, 4]
    assert rows[1]["text"] == SEED_LINES[2]


def test_task_filter(seed_log, capsys):
    result = analyze_json(capsys, str(seed_log), "--task", "Nations Dump Download")
    # The START and the check line bear the name; the END closes that task.
    assert result["lines"]["selected"] == 3
    tasks = {t["task"] for t in result["tasks"]}
    assert tasks == {"Nations Dump Download", "Nations Dump Complete"}
    assert [p["line"] for p in result["peaks"]] == [4]  # one run: its highest line


def test_since_and_until(seed_log, capsys):
    result = analyze_json(
        capsys, str(seed_log), "--since", "2025-11-16T08:32", "--until", "2025-11-16 08:36:45"
    )
    assert result["lines"]["selected"] == 3
    assert (result["first"], result["last"]) == ("2025-11-16 08:32:00", "2025-11-16 08:36:45")
    # A bare date covers its whole day; a day outside the range is not read at all.
    assert analyze_json(capsys, str(seed_log), "--until", "2025-11-16")["lines"]["selected"] == 5
    assert analyze_json(capsys, str(seed_log), "--since", "2025-11-17")["lines"]["total"] == 0
    assert main(["analyze", str(seed_log), "--since", "yesterday"]) == 2


def test_idle_trend_flags_the_seed_leak_example(tmp_path, capsys):
    # Seed 003, "Monitor Memory Leaks": Day 1 08:00 234 MB, Day 1 20:00 312 MB, Day 2 08:00 389.
    write_log(tmp_path / "memory_20251116.log", [
        line("2025-11-16 08:00:00", "---", "Idle", 234),
        line("2025-11-16 20:00:00", "---", "Idle", 312),
    ])  # fmt: skip
    write_log(tmp_path / "memory_20251117.log", [line("2025-11-17 08:00:00", "---", "Idle", 389)])
    trend = analyze_json(capsys, str(tmp_path))["idle_trend"]
    # x = 0, 12, 24 h; mean 12. y mean 311.67. Σ(x-x̄)(y-ȳ) = -12(-77.67) + 12(77.33) = 1860;
    # Σ(x-x̄)² = 288; slope = 1860 / 288 = 6.458 MB/h; 155 MB over 24 h.
    assert trend["slope_mb_per_hour"] == pytest.approx(6.458, abs=1e-3)
    assert trend["growth_mb"] == pytest.approx(155.0)
    assert trend["span_hours"] == 24
    assert trend["verdict"] == "growing"
    assert trend["daily_averages_rising"] is True
    assert [d["avg_mb"] for d in trend["days"]] == [273.0, 389.0]


def test_flat_idle_is_stable(tmp_path, capsys):
    write_log(tmp_path / "memory_20251116.log", [
        line(f"2025-11-16 {h:02d}:00:00", "---", "Idle", 230 + (h % 2)) for h in range(12)
    ])  # fmt: skip
    assert analyze_json(capsys, str(tmp_path))["idle_trend"]["verdict"] == "stable"


def test_nested_and_named_pairing(tmp_path, capsys):
    log = write_log(tmp_path / "memory_20251116.log", [
        line("2025-11-16 10:00:00", ">>>", "Outer", 100),
        line("2025-11-16 10:01:00", ">>>", "Inner", 150),
        line("2025-11-16 10:02:00", "<<<", "Inner Complete", 180),  # label: closes the top
        line("2025-11-16 10:03:00", ">>>", "Side", 200),
        line("2025-11-16 10:04:00", "<<<", "Outer", 260),  # the name: closes Outer, not Side
        line("2025-11-16 10:05:00", "<<<", "Side Error", 210),
        line("2025-11-16 10:06:00", "<<<", "Stray", 210),
        line("2025-11-16 10:07:00", ">>>", "Never ends", 210),
    ])  # fmt: skip
    result = analyze_json(capsys, str(log))
    tasks = {t["task"]: t for t in result["tasks"]}
    assert tasks["Inner"]["delta_max_mb"] == pytest.approx(30)
    assert tasks["Outer"]["delta_max_mb"] == pytest.approx(160)
    assert tasks["Outer"]["duration_max_seconds"] == 240
    assert tasks["Side"]["delta_max_mb"] == pytest.approx(10)
    assert (result["unmatched_starts"], result["unmatched_ends"]) == (1, 1)


def test_gap_longer_than_the_cap_counts_only_the_cap(tmp_path, capsys):
    log = write_log(tmp_path / "memory_20251116.log", [
        line("2025-11-16 10:00:00", "---", "Idle", 1200),
        line("2025-11-16 15:00:00", "---", "Idle", 1600),  # process was down for hours
        line("2025-11-16 15:02:00", "---", "Idle", 100, available=400),
        line("2025-11-16 15:03:00", "---", "Idle", 100, available=400),
    ])  # fmt: skip
    result = analyze_json(capsys, str(log))
    # 1200 MB for 240 s (capped), 1600 MB for 120 s; the last line stands for nothing.
    assert result["rss_warning"]["seconds"] == 360
    assert result["rss_critical"]["seconds"] == 120
    assert result["system_available_low"]["seconds"] == 60
    assert result["system_available_low"]["lines"] == 2


def test_python_dash_m_entry_point(seed_log):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "otel_memory.cli", "analyze", "--json", str(seed_log)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["lines"]["parsed"] == 5


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_with_much_to_read(seed_log):
    files = resolve_inputs([str(seed_log)])
    assert progress_for(files, io.StringIO()) is None  # not a terminal
    assert progress_for(files, _Terminal()) is None  # too little to read
    assert progress_for(files * 30, _Terminal()) is not None
    assert progress_for(files * 30, _Terminal(), enabled=False) is None  # --json


def test_progress_is_throttled_and_erased():
    now = [0.0]
    out = _Terminal()
    progress = Progress(100 << 20, out, clock=lambda: now[0], max_rate=5, delay=0.5)
    for _ in range(100):  # 1 MB every 10 ms for one second
        now[0] += 0.01
        progress.advance(1 << 20)
    # Nothing in the first half second, then at most 5 per second.
    assert 1 <= progress.updates <= 3
    assert "/ 100 MB" in out.getvalue()
    assert "MB/s" in out.getvalue()
    progress.close()
    assert out.getvalue().endswith("\r\x1b[K")


def test_no_progress_when_stderr_is_not_a_terminal(seed_log, capsys):
    assert main(["analyze", str(seed_log)]) == 0
    assert capsys.readouterr().err == ""


def test_legacy_replacement_counts_both_runs(tmp_path, capsys):
    # Seed 003's legacy sequence: set(Download), set(Processing), clear("Nations Dump Complete").
    log = write_log(tmp_path / "memory_20251116.log", [
        line("2025-11-16 08:30:00", ">>>", "Nations Dump Download", 245),
        line("2025-11-16 08:32:00", "---", "Nations Dump Download", 268),
        line("2025-11-16 08:33:00", ">>>", "Nations Dump Processing", 270),
        line("2025-11-16 08:34:00", "---", "Nations Dump Processing", 598),
        line("2025-11-16 08:36:00", "<<<", "Nations Dump Complete", 289),
        line("2025-11-16 08:38:00", "---", "Idle", 234),
    ])  # fmt: skip
    result = analyze_json(capsys, str(log))
    tasks = {t["task"]: t for t in result["tasks"]}
    download, processing = tasks["Nations Dump Download"], tasks["Nations Dump Processing"]
    assert (download["runs"], download["duration_max_seconds"]) == (1, 180)  # ended by START
    assert download["delta_max_mb"] == pytest.approx(25)
    assert (processing["runs"], processing["duration_max_seconds"]) == (1, 180)
    assert (result["unmatched_starts"], result["unmatched_ends"]) == (0, 0)
    # One peak per run and per plateau, the run's highest line first.
    assert [(p["rss_mb"], p["line"]) for p in result["peaks"]] == [(598, 4), (268, 2), (234, 6)]


def test_an_idle_plateau_is_one_peak(tmp_path, capsys):
    lines = [line(f"2025-11-16 10:{m:02d}:00", "---", "Idle", 300 + m % 7) for m in range(40)]
    lines[20:22] = [
        line("2025-11-16 10:20:00", ">>>", "job", 250),
        line("2025-11-16 10:21:00", "<<<", "job", 260),
    ]
    result = analyze_json(capsys, str(write_log(tmp_path / "memory_20251116.log", lines)))
    assert [(p["task"], p["rss_mb"], p["line"]) for p in result["peaks"]] == [
        ("Idle", 306, 7), ("Idle", 306, 28), ("job", 260, 22),
    ]  # fmt: skip


def test_idle_points_stay_bounded_and_keep_the_slope():
    from otel_memory.base.trend import fit
    from otel_memory.cli.pipeline import _IdlePoints

    points = _IdlePoints(limit=1000)
    times = [120.0 * i for i in range(10_000)]
    values = [200.0 + 0.5 * i / 30 + (i % 3) for i in range(10_000)]  # +0.5 MB per hour
    for start in range(0, 10_000, 700):  # chunks that do not align with the stride
        points.add(times[start : start + 700], values[start : start + 700])
    kept_t, kept_v = points.points()
    # A regular sample of the whole series, whatever the chunk boundaries.
    assert points.stride == 16 and kept_t == times[::16] and kept_v == values[::16]
    assert points.count == 10_000 and points.first == 0.0 and points.last == times[-1]
    found = fit(kept_t, kept_v)
    assert found is not None and found.slope_per_hour == pytest.approx(0.5, rel=1e-3)
