"""Allocation profiles of traced tasks: OTLP profiles and pprof files, built off the host's thread.

    sink = ProfileSink(resource, exporter=profile_exporter(), pprof_dir="logs/profiles")
    sink.submit(TaskProfile(name, trace_id, span_id, start_ns, end_ns, report.stacks))
    sink.close()

Deep capture groups a traced task's live allocations by call stack when the task ends (on the
task's thread: the blocks must be the ones alive then). Everything after that happens on the
daemon thread ``otel-memory-profiles``: function names from the source, the OTLP request (one
``ProfilesData`` with two profiles over one dictionary: ``space``/``bytes`` and
``objects``/``count``, every sample linked to the task span through the link table), its
export, and the gzipped pprof file. The queue is bounded: a profile that finds it full is
dropped and counted, never waited for. Nothing here raises into the host.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import gzip
import linecache
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_memory.base import pprof as _pprof_module
from otel_memory.base.config import Profiles
from otel_memory.base.diagnostics import WarnOnce
from otel_memory.base.pprof import Frame, PprofProfile, encode
from otel_memory.base.retention import PROFILES_DIR
from otel_memory.base.version import __version__
from otel_memory.sinks import profile_export as _export_module
from otel_memory.sinks.profile_export import ProfileExporter, profile_exporter

_log = logging.getLogger("otel_memory")

THREAD_NAME = "otel-memory-profiles"
SCOPE_NAME = "otel_memory"
TASK_NAME = "otel_memory.task.name"
SAMPLE_TYPES = (("space", "bytes"), ("objects", "count"))
"""Per sample: bytes still alive at the task's end, and their blocks."""

_QUEUE_SIZE = 16
_FILES_CACHED = 256

Stack = tuple[tuple[str, int], ...]
"""An allocation's call stack as ``tracemalloc`` records it: ``(file, line)``, most recent first."""

StackRow = tuple[Stack, int, int]
"""A stack with the bytes and blocks allocated there and alive at the task's end."""

# This thread's own work (parsing sources, encoding, sending) is traced too while another task
# is: a stack passing through these files is never a task's.
_OWN_FILES = frozenset(
    {__file__, _pprof_module.__file__, _export_module.__file__, ast.__file__, linecache.__file__}
)


@dataclass(frozen=True, slots=True)
class TaskProfile:
    """What one traced task leaves for its profile.

    Args:
        task_name: the task span's name.
        trace_id: the span's trace id.
        span_id: the span's id.
        start_ns: when the task started (Unix ns).
        end_ns: when it ended.
        stacks: ``(stack, bytes, blocks)`` per call stack that grew while traced.
    """

    task_name: str
    trace_id: int
    span_id: int
    start_ns: int
    end_ns: int
    stacks: tuple[StackRow, ...]


# ---------------------------------------------------------------------------------- functions


class FunctionNames:
    """``(file, line)`` -> the qualified name of the innermost function there, from the source.

    ``tracemalloc`` records files and lines only. Each file is parsed once (``ast``), on the
    profiles thread; a file without source gives ``<module>``-less names: ``file:line``.
    """

    def __init__(self) -> None:
        self._files: dict[str, list[tuple[int, int, str]]] = {}

    def __call__(self, filename: str, line: int) -> str:
        """The function's qualified name, ``<module>`` at top level."""
        scopes = self._files.get(filename)
        if scopes is None:
            if len(self._files) >= _FILES_CACHED:
                self._files.clear()
            scopes = self._files[filename] = _scopes(filename)
        if not scopes:
            return f"{os.path.basename(filename)}:{line}"
        best, best_start = "<module>", -1
        for start, end, name in scopes:
            if start <= line <= end and start > best_start:  # the innermost one encloses it
                best, best_start = name, start
        return best

    def frames(self, stack: Stack) -> tuple[Frame, ...]:
        """The stack as pprof frames ``(function, file, line)``, the allocating one first.

        A frame repeating the one before it is dropped: a comprehension runs in a frame of
        its own on the same line (before Python 3.12), which reads as a doubled bar.
        """
        frames: list[Frame] = []
        for filename, line in stack:
            frame = (self(filename, line), filename, line)
            if not frames or frames[-1] != frame:
                frames.append(frame)
        return tuple(frames)


def _scopes(filename: str) -> list[tuple[int, int, str]]:
    """``(first line, last line, qualified name)`` of every function and class in the file."""
    lines = linecache.getlines(filename)
    if not lines:
        return []
    try:
        tree = ast.parse("".join(lines), filename)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    scopes: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                scopes.append((first, child.end_lineno or child.lineno, name))
                inner = "<locals>." if not isinstance(child, ast.ClassDef) else ""
                visit(child, f"{name}.{inner}")
            else:
                visit(child, prefix)

    visit(tree, "")
    return scopes


# ---------------------------------------------------------------------------------- OTLP


def _any_value(value: object) -> Any:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return AnyValue(array_value=ArrayValue(values=[_any_value(item) for item in value]))
    return AnyValue(string_value=str(value))


def build_otlp_request(
    profile: TaskProfile,
    frames: Sequence[tuple[Frame, ...]],
    resource_attributes: Mapping[str, object],
) -> Any:
    """The ``ExportProfilesServiceRequest`` of one task: two profiles sharing one dictionary.

    ``frames`` holds each of ``profile.stacks`` as pprof frames (same order).
    """
    dictionary = pb.ProfilesDictionary()
    # Index 0 of every table is the zero value, as the format requires.
    dictionary.mapping_table.add()
    dictionary.location_table.add()
    dictionary.function_table.add()
    dictionary.link_table.add()
    dictionary.attribute_table.add()
    dictionary.stack_table.add()
    strings: dict[str, int] = {}

    def string(text: str) -> int:
        index = strings.get(text)
        if index is None:
            index = strings[text] = len(strings)
            dictionary.string_table.append(text)
        return index

    string("")
    functions: dict[tuple[str, str], int] = {}
    locations: dict[Frame, int] = {}
    stacks: dict[tuple[int, ...], int] = {}
    stack_of_sample: list[int] = []
    for stack in frames:
        indices = []
        for frame in stack:
            location = locations.get(frame)
            if location is None:
                name, filename, line = frame
                function = functions.get((name, filename))
                if function is None:
                    function = functions[(name, filename)] = len(dictionary.function_table)
                    dictionary.function_table.add(
                        name_strindex=string(name),
                        system_name_strindex=string(name),
                        filename_strindex=string(filename),
                    )
                location = locations[frame] = len(dictionary.location_table)
                dictionary.location_table.add(lines=[pb.Line(function_index=function, line=line)])
            indices.append(location)
        key = tuple(indices)
        index = stacks.get(key)
        if index is None:
            index = stacks[key] = len(dictionary.stack_table)
            dictionary.stack_table.add(location_indices=key)
        stack_of_sample.append(index)
    link = 0  # no span (an SDK-less tracer): no link
    if profile.span_id:
        dictionary.link_table.add(
            trace_id=profile.trace_id.to_bytes(16, "big"),
            span_id=profile.span_id.to_bytes(8, "big"),
        )
        link = len(dictionary.link_table) - 1
    dictionary.attribute_table.add(
        key_strindex=string(TASK_NAME), value=_any_value(profile.task_name)
    )
    task_attribute = len(dictionary.attribute_table) - 1
    profiles = []
    for value_index, (kind, unit) in enumerate(SAMPLE_TYPES):
        samples = [
            pb.Sample(stack_index=stack, link_index=link, values=[count if value_index else size])
            for stack, (_, size, count) in zip(stack_of_sample, profile.stacks, strict=True)
        ]
        profiles.append(
            pb.Profile(
                sample_type=pb.ValueType(type_strindex=string(kind), unit_strindex=string(unit)),
                samples=samples,
                time_unix_nano=profile.start_ns,
                duration_nano=max(0, profile.end_ns - profile.start_ns),
                profile_id=os.urandom(16),
                attribute_indices=[task_attribute],
            )
        )
    resource = Resource(
        attributes=[
            KeyValue(key=key, value=_any_value(value)) for key, value in resource_attributes.items()
        ]
    )
    return ExportProfilesServiceRequest(
        resource_profiles=[
            pb.ResourceProfiles(
                resource=resource,
                scope_profiles=[
                    pb.ScopeProfiles(
                        scope=InstrumentationScope(name=SCOPE_NAME, version=__version__),
                        profiles=profiles,
                    )
                ],
            )
        ],
        dictionary=dictionary,
    )


# ---------------------------------------------------------------------------------- pprof

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def pprof_file_name(profile: TaskProfile) -> str:
    """``{task}_{YYYYMMDD-HHMMSS}_{span id}.pb.gz`` (local time, as the daily logs)."""
    task = _UNSAFE.sub("-", profile.task_name).strip("-.")[:60] or "task"
    moment = datetime.fromtimestamp(profile.end_ns / 1e9).strftime("%Y%m%d-%H%M%S")
    return f"{task}_{moment}_{profile.span_id:016x}.pb.gz"


def build_pprof(profile: TaskProfile, frames: Sequence[tuple[Frame, ...]]) -> bytes:
    """The task's profile as gzipped pprof ``profile.proto`` bytes."""
    trace_id, span_id = f"{profile.trace_id:032x}", f"{profile.span_id:016x}"
    pprof = PprofProfile(
        sample_types=SAMPLE_TYPES,
        samples=tuple(
            (stack, (size, count))
            for stack, (_, size, count) in zip(frames, profile.stacks, strict=True)
        ),
        default_sample_type="space",
        time_nanos=profile.start_ns,
        duration_nanos=max(0, profile.end_ns - profile.start_ns),
        comments=(
            f"task: {profile.task_name}",
            f"trace_id: {trace_id}",
            f"span_id: {span_id}",
            f"otel_memory {__version__}: live allocations at the task's end",
        ),
        labels=(("span_id", span_id), ("trace_id", trace_id)),
    )
    return gzip.compress(encode(pprof), compresslevel=6, mtime=0)


def write_pprof(directory: Path, profile: TaskProfile, data: bytes) -> Path:
    """Write ``data`` under its file name in ``directory`` (created), atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / pprof_file_name(profile)
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------- the sink


class ProfileSink:
    """Builds and sends task profiles on its own daemon thread; never raises into the host.

    Args:
        resource_attributes: the resource of the other signals (the tracer provider's), read
            when the first profile is built (a global provider may be set after ``start()``).
        exporter: where OTLP profiles go; None: no OTLP.
        pprof_dir: where pprof files go; None: no files.
        queue_size: profiles waiting at most; more are dropped and counted.
    """

    def __init__(
        self,
        resource_attributes: Callable[[], Mapping[str, object]],
        exporter: ProfileExporter | None = None,
        pprof_dir: str | os.PathLike[str] | None = None,
        queue_size: int = _QUEUE_SIZE,
    ) -> None:
        self._resource_source = resource_attributes
        self._resource: dict[str, object] | None = None
        self._exporter = exporter
        self._pprof_dir = Path(pprof_dir) if pprof_dir is not None else None
        self._queue: queue.Queue[TaskProfile | None] = queue.Queue(maxsize=queue_size)
        self._names = FunctionNames()
        self._warn_once = WarnOnce(_log)
        self._closed = threading.Event()
        self.dropped = 0
        """Profiles that found the queue full (or came after close)."""
        self.exported = 0
        """OTLP exports the receiver accepted."""
        self.export_failed = 0
        """OTLP exports that failed (receiver down, refused, timed out)."""
        self.written: list[Path] = []
        """pprof files written, oldest first (the last 100)."""
        self.failed = 0
        """Profiles whose building or writing failed."""
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def submit_task(self, name: str, span: trace.Span, stacks: Sequence[StackRow]) -> bool:
        """Queue the profile of the task whose span is ``span`` and that just ended."""
        if not stacks:
            return False
        try:
            context = span.get_span_context()
            end_ns = time.time_ns()
            start_ns = getattr(span, "start_time", None) or end_ns
            profile = TaskProfile(
                name, context.trace_id, context.span_id, start_ns, end_ns, tuple(stacks)
            )
        except Exception as exc:  # a span of another SDK; never the host's problem
            self._warn_once("submit", "otel_memory: allocation profile skipped: %r", exc)
            return False
        return self.submit(profile)

    def submit(self, profile: TaskProfile) -> bool:
        """Queue one task's profile; False (and counted) when it is dropped."""
        if self._closed.is_set():
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(profile)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued profile is handled (tests, shutdown); True when done."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 3.0) -> None:
        """Handle what is queued within ``timeout`` (a dead collector must not hang the host's
        exit: the daemon thread is left behind), then shut the exporter."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(queue.Full):  # else the thread sees _closed after its profile
            self._queue.put_nowait(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._exporter is not None:
            try:
                self._exporter.shutdown()
            except Exception as exc:
                _log.debug("otel_memory: profile exporter shutdown failed: %r", exc)

    def _run(self) -> None:
        while True:
            profile = self._queue.get()
            try:
                if profile is None:
                    return
                self._handle(profile)
            except Exception as exc:  # a bug or a full disk must not kill the thread
                self.failed += 1
                self._warn_once("profile", "otel_memory: allocation profile failed: %r", exc)
            finally:
                self._queue.task_done()
            if self._closed.is_set() and self._queue.empty():
                return

    def _handle(self, profile: TaskProfile) -> None:
        stacks = tuple(
            row for row in profile.stacks if not any(f in _OWN_FILES for f, _ in row[0])
        )
        if not stacks:
            return
        profile = dataclasses.replace(profile, stacks=stacks)
        frames = [self._names.frames(stack) for stack, _, _ in stacks]
        if self._pprof_dir is not None:
            path = write_pprof(self._pprof_dir, profile, build_pprof(profile, frames))
            self.written = [*self.written[-99:], path]
        if self._exporter is not None:
            if self._resource is None:
                self._resource = dict(self._resource_source())
            request = build_otlp_request(profile, frames, self._resource)
            if self._exporter.export(request):
                self.exported += 1
            else:
                self.export_failed += 1
                self._warn_once(
                    "export",
                    "otel_memory: exporting an allocation profile failed (more failures are "
                    "counted, not logged)",
                )


def profile_sink(
    profiles: Profiles, log_dir: str, tracer_provider: object | None = None
) -> ProfileSink:
    """The sink for ``deep_capture.profiles``: an OTLP exporter (from the ``OTEL_EXPORTER_OTLP_*``
    variables) and/or ``{log_dir}/profiles/``; the resource is the tracer provider's."""

    def resource() -> dict[str, object]:
        provider = tracer_provider or trace.get_tracer_provider()
        found = getattr(provider, "resource", None)
        return dict(getattr(found, "attributes", None) or {})

    pprof_dir = None
    if profiles.pprof:
        if log_dir:
            pprof_dir = os.path.join(log_dir, PROFILES_DIR)
        else:
            _log.warning("otel_memory: deep_capture.profiles=%s: pprof needs a log_dir", profiles)
    exporter = None
    if profiles.otlp:
        problem = otlp_profiles_unsupported()
        if problem is None:
            exporter = profile_exporter()
        else:
            _log.warning("otel_memory: OTLP allocation profiles are off: %s", problem)
    return ProfileSink(resource, exporter=exporter, pprof_dir=pprof_dir)


def otlp_profiles_unsupported() -> str | None:
    """Why the installed ``opentelemetry-proto`` cannot carry these profiles, or None.

    The profiles messages changed shape across its releases; this package writes the one with a
    dictionary holding a stack table and one sample type per profile (opentelemetry-proto 1.45
    has it; 1.38, the oldest this package allows, has a repeated sample type and no stack
    table: there only pprof files are written).
    """
    dictionary = pb.ProfilesDictionary.DESCRIPTOR.fields_by_name
    profile = pb.Profile.DESCRIPTOR.fields_by_name
    if "stack_table" not in dictionary or "link_table" not in dictionary:
        return "the installed opentelemetry-proto's profiles dictionary has no stack/link table"
    # One ValueType per profile (older releases had a repeated field of them).
    if "sample_type" not in profile or not hasattr(
        pb.Profile().sample_type, "type_strindex"
    ):
        return "the installed opentelemetry-proto's profiles use another sample layout"
    return None
