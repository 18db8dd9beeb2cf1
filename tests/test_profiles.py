"""Allocation profiles of traced tasks, read by real consumers: the project's OTLP receiver
(decoding with opentelemetry-proto, over gRPC and HTTP) and ``go tool pprof``; a collector that
is down costs the host nothing and loses no span."""

from __future__ import annotations

import gzip
import mmap
import os
import shutil
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import otel_memory
from otel_memory import traced_task
from otel_memory.base.config import config_from_dict
from otel_memory.base.pprof import PprofProfile, decode, encode, top_frames
from otel_memory.base.retention import archive_old_logs
from otel_memory.guards.deepcapture import DeepCapture
from otel_memory.runtime.runtime import get_runtime
from otel_memory.sinks.profile_export import HttpProfileExporter, settings_from_env
from otel_memory.sinks.profiles import (
    FunctionNames,
    ProfileSink,
    TaskProfile,
    build_otlp_request,
    build_pprof,
    pprof_file_name,
)
from tests.otlp_receiver import OTLPReceiver

MB = 1_048_576
HERE = os.path.abspath(__file__)


def _line_of(marker: str) -> int:
    with open(__file__, encoding="utf-8") as source:
        for number, text in enumerate(source, 1):
            if text.rstrip().endswith(marker):
                return number
    raise AssertionError(marker)


BLOCK_MB = 50  # above glibc's largest mmap threshold: freed blocks go back to the kernel, so
# no later test finds a heap that already holds what it allocates


def allocate_dump(mb: int) -> list[bytearray]:
    """The one function that allocates; each block's pages are written so RSS really grows."""
    blocks = [bytearray(BLOCK_MB * MB) for _ in range(mb // BLOCK_MB)]  # ALLOCATES
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])
    return blocks


class Outer:
    def method(self) -> int:
        def inner() -> int:
            return 1  # INNER

        return inner()  # METHOD


# ---------------------------------------------------------------------------------- pprof codec


def test_pprof_round_trip_deduplicates_functions_locations_and_strings():
    leaf = ("alloc", "/app/a.py", 12)
    caller = ("main", "/app/a.py", 30)
    other_line = ("alloc", "/app/a.py", 13)
    profile = PprofProfile(
        sample_types=(("space", "bytes"), ("objects", "count")),
        samples=(((leaf, caller), (4096, 2)), ((other_line, caller), (100, 1))),
        default_sample_type="space",
        time_nanos=1_700_000_000_000_000_000,
        duration_nanos=5,
        comments=("task: Nightly",),
        labels=(("span_id", "00f067aa0ba902b7"),),
    )
    data = encode(profile)
    assert decode(data) == profile
    # "alloc" and "/app/a.py" are written once each although three frames name them
    assert data.count(b"alloc") == 1 and data.count(b"/app/a.py") == 1
    assert top_frames(decode(data))[0] == (leaf, 4096)


def test_pprof_decode_refuses_garbage():
    from otel_memory.base.pprof import PprofError

    for garbage in (b"\x0a\xff", b"\x0f", b"\x32\x05ab"):
        with pytest.raises(PprofError):
            decode(garbage)


def test_function_names_come_from_the_source():
    names = FunctionNames()
    assert names(HERE, _line_of("# ALLOCATES")) == "allocate_dump"
    assert names(HERE, _line_of("# INNER")) == "Outer.method.<locals>.inner"
    assert names(HERE, _line_of("# METHOD")) == "Outer.method"
    assert names(HERE, 1) == "<module>"
    assert names("/nonexistent/x.py", 7) == "x.py:7"


# ---------------------------------------------------------------------------------- OTLP shape


def _profile(stacks) -> TaskProfile:
    return TaskProfile("Nightly Dump", 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7,
                       1_000, 3_000, stacks)


def test_otlp_request_shares_one_dictionary_without_duplicates():
    allocates = _line_of("# ALLOCATES")
    a, b, c = (HERE, allocates), (HERE, _line_of("# METHOD")), (HERE, allocates + 1)
    profile = _profile((((a, b), 4096, 2), ((c, b), 100, 1), ((a, b), 7, 1)))
    names = FunctionNames()
    request = build_otlp_request(profile, [names.frames(s) for s, _, _ in profile.stacks],
                                 {"service.name": "bot"})
    table = request.dictionary
    for name in ("mapping_table", "location_table", "function_table", "link_table",
                 "attribute_table", "stack_table"):
        first = getattr(table, name)[0]
        assert first == type(first)(), name  # index 0 is the zero value
    assert table.string_table[0] == ""
    assert len(set(table.string_table)) == len(table.string_table)
    assert len(table.location_table) == 1 + 3  # three distinct lines
    assert len(table.function_table) == 1 + 2  # allocate_dump (two lines), Outer.method
    assert len(table.stack_table) == 1 + 2  # (a, b) twice, (c, b) once
    assert [(link.trace_id.hex(), link.span_id.hex()) for link in table.link_table] == [
        ("", ""), ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")]
    (resource_profiles,) = request.resource_profiles
    assert resource_profiles.resource.attributes[0].key == "service.name"
    (scope_profiles,) = resource_profiles.scope_profiles
    assert scope_profiles.scope.name == "otel_memory"
    space, objects = scope_profiles.profiles
    types = [(table.string_table[p.sample_type.type_strindex],
              table.string_table[p.sample_type.unit_strindex]) for p in (space, objects)]
    assert types == [("space", "bytes"), ("objects", "count")]
    assert [s.values[0] for s in space.samples] == [4096, 100, 7]
    assert [s.values[0] for s in objects.samples] == [2, 1, 1]
    assert {s.link_index for s in space.samples} == {1}
    assert space.duration_nano == 2_000


def test_settings_follow_the_sdk_precedence():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=2", "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
           "OTEL_EXPORTER_OTLP_PROFILES_HEADERS": "x-token=s%20t",
           "OTEL_EXPORTER_OTLP_PROFILES_CERTIFICATE": "/ca.pem"}
    settings = settings_from_env(env)
    assert settings.endpoint == "http://collector:4318/v1development/profiles"
    assert settings.headers == (("x-token", "s t"),)
    assert settings.timeout == 3 and settings.certificate == "/ca.pem"
    env["OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT"] = "https://p.example:443/custom"
    env["OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL"] = "grpc"
    settings = settings_from_env(env)
    assert (settings.protocol, settings.endpoint, settings.insecure) == (
        "grpc", "https://p.example:443/custom", False)
    assert settings_from_env({}).endpoint == "http://localhost:4317"
    assert settings_from_env({}).insecure is True
    insecure_off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317",
                    "OTEL_EXPORTER_OTLP_INSECURE": "false"}
    assert settings_from_env(insecure_off).insecure is False


# ---------------------------------------------------------------------------------- end to end


def _start(tmp_path: Path, profiles: str) -> None:
    keys = {
        "log_dir": str(tmp_path / "logs"), "retention_days": 0, "sample_interval_ms": 20,
        "deep_capture": {"enabled": True, "rss_growth_mb": 50, "profiles": profiles},
    }
    otel_memory.start(config_from_dict({"general": {"monitoring": {"memory_monitor": keys}}}))


def _run_dump_twice() -> None:
    """The first run outgrows its start (arms the name); the second is traced from its start."""
    # Fresh pages from the kernel: RSS grows even when the heap kept earlier tests' memory.
    with traced_task("Nations Dump Processing"), mmap.mmap(-1, 80 * MB) as pages:
        pages[:: 4096] = b"x" * (80 * MB // 4096)
        time.sleep(0.3)  # the sampler sees the growth
    with traced_task("Nations Dump Processing"):
        held = allocate_dump(150)
        time.sleep(0.05)
    del held  # alive at the task's end: in its profile


def _profiles_sink():
    running = get_runtime().monitor._running
    assert running is not None and running.profiles is not None
    return running.profiles


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_task_allocating_150_mb_leaves_a_profile_linked_to_its_span(
    tmp_path, span_exporter, monkeypatch, protocol
):
    go = shutil.which("go")
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT",
                           receiver.endpoint(protocol) + ("" if protocol == "grpc"
                                                          else "/v1development/profiles"))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL", protocol)
        _start(tmp_path, "both")
        sink = _profiles_sink()
        _run_dump_twice()
        assert sink.flush(30)
        otel_memory.stop()
        samples = receiver.profile_samples()

    spans = [s for s in span_exporter.get_finished_spans() if s.name == "Nations Dump Processing"]
    assert len(spans) == 2
    traced_span = spans[1]
    span_id = f"{traced_span.context.span_id:016x}"
    trace_id = f"{traced_span.context.trace_id:032x}"
    allocating = ("allocate_dump", HERE, _line_of("# ALLOCATES"))

    # OTLP: the top space sample ends at the allocating line and links the traced run's span
    linked = [s for s in samples if s.span_id == span_id]
    space = sorted((s for s in linked if s.sample_type == ("space", "bytes")),
                   key=lambda s: s.value, reverse=True)
    assert space, (samples[:3], sink.exported, sink.export_failed, sink.dropped, sink.failed)
    assert space[0].stack[0] == allocating, [(s.value, s.stack[:3]) for s in space[:5]]
    # frames: 0 with profiles on keeps 16 frames: the task's code is in the stack
    assert "_run_dump_twice" in [name for name, _, _ in space[0].stack]
    assert space[0].value >= 140 * MB
    assert space[0].trace_id == trace_id
    assert space[0].protocol == protocol
    assert space[0].profile_attributes == {"otel_memory.task.name": "Nations Dump Processing"}
    assert space[0].scope == "otel_memory"
    objects = [s for s in linked if s.sample_type == ("objects", "count")
               and s.stack == space[0].stack]
    assert objects and objects[0].value >= 150 // BLOCK_MB  # the blocks (and their list)

    # pprof: one file per traced task run (the first one too, when traced in time), named after
    # task, time and span
    (path,) = [p for p in (tmp_path / "logs" / "profiles").iterdir() if span_id in p.name]
    assert path.name.startswith("Nations-Dump-Processing_")
    profile = decode(gzip.decompress(path.read_bytes()))
    (top, size), *_ = top_frames(profile)
    assert top == allocating and size >= 140 * MB
    assert ("span_id", span_id) in profile.labels
    if go is None:
        pytest.skip("go is not installed: go tool pprof not checked")
    env = {**os.environ, "HOME": str(tmp_path), "GOPATH": str(tmp_path / "go")}
    result = subprocess.run([go, "tool", "pprof", "-top", str(path)], capture_output=True,
                            text=True, timeout=120, env=env, check=True)
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("flat"))
    top_line = lines[header + 1].split()
    assert top_line[-1] == "allocate_dump", result.stdout
    assert top_line[0].endswith("MB") and float(top_line[0][:-2]) >= 140, result.stdout


@pytest.mark.e2e
def test_a_collector_that_is_down_costs_nothing_and_loses_no_span(
    tmp_path, span_exporter, monkeypatch
):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT", "2")
    _start(tmp_path, "otlp")
    sink = _profiles_sink()
    _run_dump_twice()  # raises nothing
    assert sink.flush(30)
    # the traced run's profile, and the first run's when it was traced in time
    assert sink.exported == 0 and sink.dropped == 0 and sink.export_failed in (1, 2)
    otel_memory.stop()
    names = [s.name for s in span_exporter.get_finished_spans()]
    assert names == ["Nations Dump Processing"] * 2
    assert not (tmp_path / "logs" / "profiles").exists()  # otlp only: no pprof file


def test_a_full_queue_drops_and_counts_and_never_blocks(tmp_path):
    # A receiver that accepts connections and never answers: each export waits its timeout.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    env = {"OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}/p",
           "OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL": "http/protobuf",
           "OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT": "1"}
    sink = ProfileSink(dict, exporter=HttpProfileExporter(settings_from_env(env)), queue_size=1)
    try:
        profile = _profile((((("/app/a.py", 1),), 10, 1),))
        # submit never waits: with one place in the queue and the receiver hung, most are
        # dropped (had it waited, all five would have been taken in the end)
        accepted_count = sum(sink.submit(profile) for _ in range(5))
        assert sink.flush(20)
        assert accepted_count + sink.dropped == 5 and sink.dropped >= 3
        assert sink.export_failed == accepted_count
        assert threading.current_thread() is not sink._thread
        assert sink._thread.name == "otel-memory-profiles" and sink._thread.daemon
    finally:
        sink.close()
        stop.set()
        thread.join(2)
        for connection in accepted:
            connection.close()
        server.close()


def test_the_thread_survives_a_profile_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "profiles"
    blocker.write_text("a file where the folder should be")
    sink = ProfileSink(dict, pprof_dir=blocker)
    profile = _profile((((("/app/a.py", 1),), 10, 1),))
    sink.submit(profile)
    assert sink.flush(10)
    assert sink.failed == 1
    blocker.unlink()
    sink.submit(profile)
    assert sink.flush(10)
    assert [p.name for p in sink.written] == [pprof_file_name(profile)]
    sink.close()


def test_profiles_off_builds_no_sink(tmp_path):
    _start(tmp_path, "off")
    running = get_runtime().monitor._running
    assert running is not None and running.profiles is None
    assert not any(t.name == "otel-memory-profiles" for t in threading.enumerate())
    otel_memory.stop()


def test_retention_deletes_profiles_with_the_daily_logs(tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    now = datetime(2026, 3, 31, 12)
    old_day = (now - timedelta(days=31)).strftime("%Y%m%d")
    new_day = (now - timedelta(days=30)).strftime("%Y%m%d")
    old = folder / f"Nightly_{old_day}-020000_00f067aa0ba902b7.pb.gz"
    new = folder / f"Nightly_{new_day}-020000_00f067aa0ba902b7.pb.gz"
    other = folder / "notes.txt"
    for path in (old, new, other):
        path.write_bytes(b"x")
    result = archive_old_logs(tmp_path, retention_days=30, now=now)
    assert result.deleted == (old,)
    assert sorted(p.name for p in folder.iterdir()) == sorted([new.name, other.name])
    archive_old_logs(tmp_path, retention_days=0, now=now + timedelta(days=400))
    assert new.exists()  # 0 keeps everything


def test_pprof_file_is_what_deep_capture_saw(tmp_path):
    # Deep capture's stacks -> pprof, without the monitor: every frame is kept (frames=8).
    capture = DeepCapture(rss_growth_bytes=1, frames=8)
    key = object()
    capture.task_started(key, "t", 0)
    capture.sampled(10**15)  # "grown": traced from now on
    held = allocate_dump(100)
    report = capture.task_ended(key)
    del held
    assert report is not None and report.stacks
    names = FunctionNames()
    profile = TaskProfile("t", 1, 2, 0, 1, report.stacks)
    data = build_pprof(profile, [names.frames(stack) for stack, _, _ in report.stacks])
    decoded = decode(gzip.decompress(data))
    (top, size), *_ = top_frames(decoded)
    assert top == ("allocate_dump", HERE, _line_of("# ALLOCATES")) and size >= 100 * MB
    stack = max(decoded.samples, key=lambda sample: sample[1][0])[0]
    assert "test_pprof_file_is_what_deep_capture_saw" in [name for name, _, _ in stack]  # caller


def test_the_profiles_threads_own_work_is_left_out(tmp_path):
    # While another task is traced, this thread's parsing and encoding are traced too.
    import otel_memory.sinks.profiles as profiles_module

    own = ((profiles_module.__file__, 10), (HERE, _line_of("# ALLOCATES")))
    task = ((HERE, _line_of("# ALLOCATES")),)
    sink = ProfileSink(dict, pprof_dir=tmp_path)
    sink.submit(_profile(((own, 500, 5), (task, 100, 1))))
    assert sink.flush(10)
    sink.close()
    (path,) = sink.written
    decoded = decode(gzip.decompress(path.read_bytes()))
    assert [values for _, values in decoded.samples] == [(100, 1)]


def test_a_comprehensions_own_frame_is_not_drawn_twice():
    line = _line_of("# ALLOCATES")
    frames = FunctionNames().frames(((HERE, line), (HERE, line), (HERE, line + 1)))
    assert [f[2] for f in frames] == [line, line + 1]
