"""The daily memory log: golden lines, sanitised names, midnight rollover, concurrent writers."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from otel_memory.activity.events import EventPipeline, LineEvent
from otel_memory.base.logline import LINE_PATTERN, Marker, format_line, parse_line
from otel_memory.kernel.readings import MB, MemoryReading, PsutilReadingSource
from otel_memory.sinks.dailylog import DailyLogSink, DailyLogWriter
from otel_memory.testing import ManualClock, reading

SEED_LINES = [
    "2025-11-16 08:30:00 >>> TASK START [Nations Dump Download] | RSS:  245.3 MB | VMS:  512.1 MB | System Available: 1024.5 MB (50.2% free)",
    "2025-11-16 08:32:00 --- [Nations Dump Download] | RSS:  267.8 MB | VMS:  534.2 MB | System Available: 1001.2 MB (49.1% free)",
    "2025-11-16 08:36:45 <<< TASK END [Nations Dump Complete] | RSS:  289.1 MB | VMS:  545.8 MB | System Available:  989.7 MB (48.6% free)",
    "2025-11-16 08:38:00 --- [Idle] | RSS:  234.2 MB | VMS:  498.3 MB | System Available: 1043.8 MB (51.3% free)",
]


def local(y: int, mo: int, d: int, h: int, mi: int, s: int) -> float:
    return time.mktime((y, mo, d, h, mi, s, 0, 0, -1))


_pipeline: EventPipeline | None = None


def emit_line(marker, name, r, span=None, flush=True):
    """Queue one line through the real pipeline (its thread drains it) and, by default, flush."""
    assert _pipeline is not None
    _pipeline.put(LineEvent(marker, name, r, span, None))
    if flush:
        _pipeline.flush()


@pytest.fixture
def memory_logger(tmp_path):
    global _pipeline
    _pipeline = EventPipeline()
    _pipeline.set_sinks([DailyLogSink(DailyLogWriter(tmp_path / "logs"))])
    yield _pipeline
    _pipeline.close()
    _pipeline = None


def test_golden_lines_match_the_seed_for_known_numbers(memory_logger, tmp_path):
    # (marker, name, rss, vms, available MB, total MB chosen so available/total gives the seed's %)
    events = [
        (Marker.START, "Nations Dump Download", (2025, 11, 16, 8, 30, 0), 245.3, 512.1, 1024.5, 2040.8),
        (Marker.CHECK, "Nations Dump Download", (2025, 11, 16, 8, 32, 0), 267.8, 534.2, 1001.2, 2039.1),
        (Marker.END, "Nations Dump Complete", (2025, 11, 16, 8, 36, 45), 289.1, 545.8, 989.7, 2036.4),
        (Marker.CHECK, "Idle", (2025, 11, 16, 8, 38, 0), 234.2, 498.3, 1043.8, 2034.7),
    ]
    for marker, name, when, rss, vms, available, total in events:
        r = reading(rss, vms, available, total, timestamp=local(*when))
        emit_line(marker, name, r, None)
    text = (tmp_path / "logs" / "memory_20251116.log").read_bytes()
    assert text == ("\n".join(SEED_LINES) + "\n").encode()


@pytest.mark.parametrize("line", SEED_LINES)
def test_seed_lines_match_the_pattern_and_parse(line):
    assert LINE_PATTERN.fullmatch(line)
    parsed = parse_line(line)
    assert parsed is not None
    assert f"{parsed.rss_mb:6.1f}" in line


def v01_line(marker: Marker, name: str, r: MemoryReading) -> str:
    """The line as v0.1 wrote it: one uncached strftime and four formatted numbers per line."""
    name = name.translate({ord(c): " " for c in "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029"})
    free = r.system_available / r.system_total if r.system_total else 0.0
    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.timestamp))} "
        f"{marker.value} [{name.replace(']', ')')}] | RSS: {r.rss / MB:6.1f} MB"
        f" | VMS: {r.vms / MB:6.1f} MB"
        f" | System Available: {r.system_available / MB:6.1f} MB"
        f" ({free * 100:.1f}% free)"
    )


def random_events(rng: random.Random, count: int) -> list[LineEvent]:
    """Task lines as a busy process makes them: names, seconds and the system side repeat,
    with numbers on the rounding edges, zero totals and the odd name mixed in."""
    names = ["Nations Dump Download", "Idle", "a]b\nc", "ünïcødé ✓", "x" * 300, "", "t\u2028u"]
    names += [f"job {i}" for i in range(40)]
    edges = [0, 1, MB - 1, MB, 5 * MB // 100, round(0.05 * MB), round(0.15 * MB), 10**12]
    base = time.mktime((2025, 11, 16, 23, 59, 0, 0, 0, -1))  # runs past local midnight
    totals = [2048 * MB, 16 * 1024**3, 0, 3 * MB]
    events = []
    for _ in range(count):
        def size() -> int:
            return rng.choice(edges) if rng.random() < 0.2 else rng.randrange(0, 1 << 36)
        second = base + rng.randrange(0, 120) if rng.random() < 0.9 else rng.uniform(0, 2e9)
        total = rng.choice(totals) if rng.random() < 0.7 else size()
        available = rng.choice([total // 2, total // 3, 0]) if rng.random() < 0.6 else size()
        r = MemoryReading(second + rng.random(), size(), rng.choice([size(), 512 * MB]),
                          available, total)
        events.append(LineEvent(rng.choice(list(Marker)), rng.choice(names), r, None, None))
    return events


def test_lines_are_byte_identical_to_v01_for_random_readings_names_and_times(tmp_path):
    # GIVEN 5,000 random lines, in batches as the events thread hands them to the sink
    events = random_events(random.Random(20251116), 5000)
    sink = DailyLogSink(DailyLogWriter(tmp_path))
    for i in range(0, len(events), 700):
        sink.write(events[i : i + 700])
    sink.close()
    # THEN every file holds exactly v0.1's lines, in order, each in the file of its local date
    expected: dict[str, list[str]] = {}
    for e in events:
        day = time.strftime("%Y%m%d", time.localtime(e.reading.timestamp))
        expected.setdefault(f"memory_{day}.log", []).append(v01_line(*e[:3]) + "\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)
    for file_name, lines in expected.items():
        assert (tmp_path / file_name).read_bytes() == "".join(lines).encode("utf-8", "backslashreplace")
    assert [format_line(*e[:3]) for e in events] == [v01_line(*e[:3]) for e in events]


def test_names_are_sanitised_in_the_file_only():
    line = format_line(Marker.START, "a]b\nc\r\u2028d", reading())
    assert "[a)b c  d]" in line
    assert LINE_PATTERN.fullmatch(line)


def test_diagnostics_of_the_package_never_reach_the_file(memory_logger, tmp_path):
    logging.getLogger("otel_memory").warning("something went wrong")
    assert not (tmp_path / "logs").exists()


def test_midnight_rollover_with_a_controllable_clock(memory_logger, tmp_path):
    clock = ManualClock(local(2025, 11, 16, 23, 59, 50))
    source = PsutilReadingSource(clock=clock)
    written = []
    for _ in range(20):  # 23:59:50 .. 00:00:09, one line a second
        r = source.read()
        emit_line(Marker.CHECK, "Idle", r, None)
        written.append(r.timestamp)
        clock.advance(1)
    day1 = (tmp_path / "logs" / "memory_20251116.log").read_text().splitlines()
    day2 = (tmp_path / "logs" / "memory_20251117.log").read_text().splitlines()
    assert len(day1) == 10 and len(day2) == 10
    assert day1[-1].startswith("2025-11-16 23:59:59 --- [Idle]")
    assert day2[0].startswith("2025-11-17 00:00:00 --- [Idle]")
    assert all(parse_line(line) for line in day1 + day2)


def test_lines_land_in_the_file_of_their_own_date_even_out_of_order(memory_logger, tmp_path):
    before = reading(timestamp=local(2025, 11, 16, 23, 59, 59))
    after = reading(timestamp=local(2025, 11, 17, 0, 0, 0))
    emit_line(Marker.CHECK, "late", after, None)
    emit_line(Marker.CHECK, "early", before, None)  # a thread that read before midnight, wrote after
    assert "[early]" in (tmp_path / "logs" / "memory_20251116.log").read_text()
    assert "[late]" in (tmp_path / "logs" / "memory_20251117.log").read_text()


def test_concurrent_threads_never_split_or_lose_a_line(memory_logger, tmp_path):
    clock = ManualClock(local(2025, 11, 16, 12, 0, 0))
    name = "x" * 3000  # long lines make interleaving visible if writes were split

    def writer(n: int) -> None:
        for i in range(250):
            emit_line(Marker.CHECK, f"{n}-{i}-{name}", reading(timestamp=clock()), flush=i % 7 == 0)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    memory_logger.flush()
    lines = (tmp_path / "logs" / "memory_20251116.log").read_text().splitlines()
    assert len(lines) == 2000
    parsed = [parse_line(line) for line in lines]
    assert all(parsed)
    assert {p.name.split("-", 2)[0] + "-" + p.name.split("-", 2)[1] for p in parsed} == {
        f"{n}-{i}" for n in range(8) for i in range(250)
    }


WRITER = """
import sys
from otel_memory.sinks.dailylog import DailyLogWriter
from otel_memory.base.logline import Marker, format_message
from otel_memory.testing import reading
writer = DailyLogWriter(sys.argv[1])
for i in range(300):
    r = reading(timestamp=1763290800.0)
    writer.write_lines([(r.timestamp, format_message(Marker.CHECK, f"proc {sys.argv[2]} line {i} " + "y" * 2000, r))])
"""


def test_concurrent_processes_never_split_or_lose_a_line(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(n)]) for n in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    (log_file,) = Path(tmp_path).glob("memory_*.log")
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1200
    assert all(parse_line(line) for line in lines)


def test_unwritable_directory_is_reported_once_and_never_raises(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    writer = DailyLogWriter(blocker / "logs")
    for _ in range(3):
        r = reading()
        writer.write_lines([(r.timestamp, "--- [Idle]")])
    assert caplog.text.count("cannot write the daily log") == 1
    assert writer.lines_lost == 3


def test_a_failing_write_is_reported_once_per_episode_and_recovery_once(tmp_path, caplog):
    failing = {"on": True}

    def write(fd, data):
        if failing["on"]:
            raise OSError(28, "No space left on device")
        return os.write(fd, data)

    writer = DailyLogWriter(tmp_path / "logs", write=write)
    r = reading()
    for _ in range(201):
        writer.write_lines([(r.timestamp, format_line(Marker.CHECK, "Idle", r)[20:])])
    failing["on"] = False
    writer.write_lines([(r.timestamp, "--- [Idle] after")])
    failing["on"] = True
    writer.write_lines([(r.timestamp, "--- [Idle] lost again")])
    assert caplog.text.count("No space left on device") == 2  # two episodes
    assert caplog.text.count("works again") == 1
    assert writer.lines_lost == 202 and writer.lines_written == 1


def test_host_logging_configuration_neither_silences_nor_receives_the_lines(tmp_path):
    root = logging.getLogger()
    seen = []

    class Spy(logging.Handler):
        def emit(self, record):
            seen.append(record)

    spy = Spy()
    root.addHandler(spy)
    logging.getLogger("otel_memory").setLevel(logging.CRITICAL)
    root.setLevel(logging.CRITICAL)
    try:
        import otel_memory
        from otel_memory.base.config import config_from_dict

        otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": {
            "log_dir": str(tmp_path / "logs"), "retention_days": 0, "export_logs": "none"}}}}))
        for i in range(50):
            with otel_memory.traced_task(f"t{i}"):
                pass
        otel_memory.stop()
    finally:
        root.removeHandler(spy)
    lines = [line for p in (tmp_path / "logs").glob("memory_*.log") for line in p.read_text().splitlines()]
    assert len(lines) == 102  # started, 50 x (START, END), stopped
    assert not [r for r in seen if r.name == "otel_memory"]
