"""Pairing daily-log lines into task runs (otel_memory.cli.taskruns)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_memory.base.logline import parse_line
from otel_memory.cli.scan import naive_seconds
from otel_memory.cli.taskruns import (
    MONITOR_STARTED,
    MONITOR_STOPPED,
    TaskRun,
    pair_runs,
)
from otel_memory.runtime.monitor import STARTED, STOPPED


def line(clock: str, marker: str, name: str, rss: float) -> str:
    return (
        f"2025-11-16 {clock} {marker} [{name}] | RSS: {rss:6.1f} MB | VMS:  512.1 MB "
        "| System Available: 1024.5 MB (50.2% free)"
    )


def runs_of(*lines: str) -> list[TaskRun]:
    return pair_runs(parse_line(text) for text in lines)


def at(clock: str) -> float:
    from datetime import datetime

    return naive_seconds(datetime.fromisoformat(f"2025-11-16 {clock}"))


START, END, CHECK = ">>> TASK START", "<<< TASK END", "---"


def test_seed_003_sequence_is_two_runs():
    # GIVEN the legacy flat API: set(Download), set(Processing), clear("Nations Dump Complete")
    runs = runs_of(
        line("08:30:00", START, "Nations Dump Download", 245.3),
        line("08:32:00", CHECK, "Nations Dump Download", 267.8),
        line("08:33:00", START, "Nations Dump Processing", 270.0),
        line("08:34:15", CHECK, "Nations Dump Processing", 598.4),
        line("08:36:45", END, "Nations Dump Complete", 289.1),
        line("08:38:00", CHECK, "Idle", 234.2),
    )
    # THEN Processing ended with the label, Download was replaced by the second START
    processing, download = runs
    assert processing == TaskRun(
        "Nations Dump Processing", at("08:33:00"), at("08:36:45"), 270.0, 289.1, 598.4,
        "Nations Dump Complete", "end",
    )  # fmt: skip
    assert download == TaskRun(
        "Nations Dump Download", at("08:30:00"), at("08:33:00"), 245.3, 270.0, 270.0, None,
        "replaced",
    )  # fmt: skip
    assert download.duration == 180.0
    assert processing.delta_mb is not None and round(processing.delta_mb, 1) == 19.1


def test_replacement_is_known_even_when_the_log_stops_there():
    runs = runs_of(
        line("08:30:00", START, "A", 100.0),
        line("08:31:00", START, "B", 150.0),
        line("08:32:00", END, "B Complete", 120.0),
    )
    assert [(r.name, r.end_reason, r.end) for r in runs] == [
        ("B", "end", at("08:32:00")),
        ("A", "replaced", at("08:31:00")),
    ]


def test_nested_tasks_end_by_name_innermost_first():
    runs = runs_of(
        line("08:30:00", START, "outer", 100.0),
        line("08:31:00", START, "inner", 110.0),
        line("08:32:00", CHECK, "inner", 400.0),
        line("08:33:00", END, "inner", 120.0),
        line("08:34:00", CHECK, "outer", 130.0),
        line("08:35:00", END, "outer", 125.0),
    )
    assert [(r.name, r.end_reason, r.peak_rss_mb, r.end_label) for r in runs] == [
        ("inner", "end", 400.0, "inner"),
        ("outer", "end", 400.0, "outer"),  # process RSS: the inner spike is outer's too
    ]


def test_idle_line_shows_a_forgotten_task_is_over():
    runs = runs_of(
        line("08:30:00", START, "forgotten", 100.0),
        line("08:32:00", CHECK, "forgotten", 300.0),
        line("08:34:00", CHECK, "Idle", 90.0),
    )
    assert [(r.end_reason, r.end, r.end_rss_mb, r.peak_rss_mb) for r in runs] == [
        ("gone", at("08:34:00"), 90.0, 300.0)
    ]


def test_monitor_restart_leaves_runs_unfinished_and_stop_ends_them():
    runs = runs_of(
        line("08:30:00", START, "killed", 100.0),
        line("08:40:00", CHECK, MONITOR_STARTED, 50.0),
        line("08:41:00", START, "stopped", 60.0),
        line("08:42:00", CHECK, MONITOR_STOPPED, 70.0),
    )
    assert [(r.name, r.end_reason, r.end) for r in runs] == [
        ("killed", "unfinished", None),
        ("stopped", "gone", at("08:42:00")),
    ]
    assert runs[0].duration is None and runs[0].delta_mb is None


def test_end_without_start_is_counted_not_paired():
    assert runs_of(line("08:30:00", END, "Orphan Complete", 100.0)) == []


def test_monitor_names_agree():
    assert (MONITOR_STARTED, MONITOR_STOPPED) == (STARTED, STOPPED)


MARKERS = [START, END, CHECK]
NAMES = ["A", "B", "Idle", MONITOR_STARTED, MONITOR_STOPPED, "A Complete"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(MARKERS), st.sampled_from(NAMES)), max_size=40))
def test_every_start_becomes_exactly_one_run(events):
    texts = [
        line(f"08:{i // 60:02d}:{i % 60:02d}", m, n, 100.0 + i) for i, (m, n) in enumerate(events)
    ]
    runs = runs_of(*texts)
    assert len(runs) == sum(1 for m, _ in events if m == START)
    for run in runs:
        assert run.start_rss_mb <= run.peak_rss_mb  # RSS rises with i here
        if run.end is not None:
            assert run.end >= run.start and run.end_rss_mb is not None
            assert run.peak_rss_mb >= run.end_rss_mb
