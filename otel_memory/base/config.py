"""Configuration: a frozen dataclass tree built by :func:`load_config` from YAML and environment.

    from otel_memory import load_config

    config = load_config("memory.yaml")          # or None: OTEL_PYTHON_MEMORY_CONFIG, then defaults
    config.monitor.interval_seconds              # 120

Every key is optional. ``OTEL_PYTHON_MEMORY_<SECTION>_<KEY>`` overrides one key (see
:mod:`otel_memory.base.environment_variables`). Every value is checked in one place,
:func:`_build`, against the type and the bounds declared on the field; a bad value or an unknown
key raises :class:`ConfigError` naming the key path, the value and the rule. Every number has
a maximum as well as a minimum (a 1e10-second interval would overflow the thread's wait), NaN
and infinity are refused, and so are paths that the OS cannot take (NUL, unencodable text).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from otel_memory.base import environment_variables as env_vars


class ConfigError(ValueError):
    """A configuration value or key is wrong; ``key_path`` and ``value`` say which."""

    def __init__(self, message: str, key_path: str = "", value: object = None) -> None:
        super().__init__(message)
        self.key_path = key_path
        self.value = value


def _rule(
    *, minimum: float | None = None, maximum: float | None = None, path: bool = False
) -> Any:
    """Field metadata: the bounds :func:`_build` enforces; ``path``: the OS must accept it."""
    return {"minimum": minimum, "maximum": maximum, "path": path}


DAY_SECONDS = 86_400
"""Longest interval between periodic lines or snapshots: a day (threads wait far below
``threading.TIMEOUT_MAX``, and every daily log gets at least one ``---`` line)."""
MAX_MB = 1 << 30
"""Largest memory size in MB (1 PiB): far above any machine, far below float trouble."""
MAX_DAYS = 36_500
"""Longest retention, a hundred years: "keep" without overflowing date arithmetic."""
MAX_TOP_N = 1_000
"""Most allocation sites listed on a span: each is an entry of three array attributes."""
PROFILE_FRAMES = 16
"""Frames kept by default when allocation profiles are on: the task's code down to the line."""
MAX_CLASSES = 100_000
"""Most classes listed by the census: more classes than a process holds, so "all" still fits."""


class ExportLogs(str, Enum):
    """Which daily-log lines also leave as OTel log records (``memory_monitor.export_logs``).

    v0.1's booleans still work: ``true`` is :attr:`ALL`, ``false`` is :attr:`NONE`. The truth
    value says whether anything is exported at all (only :attr:`NONE` is false).
    """

    EVENTS = "events"
    """``---`` lines and the events (thresholds, leak suspects, previous run, allocations)."""
    ALL = "all"
    """Also every START and END line."""
    NONE = "none"
    """Nothing; the daily file still has every line."""

    def __bool__(self) -> bool:
        return self is not ExportLogs.NONE

    def __str__(self) -> str:
        return self.value


class Profiles(str, Enum):
    """Where a traced task's allocation profile goes (``memory_monitor.deep_capture.profiles``).

    YAML reads a bare ``off`` as ``false``: that spelling means :attr:`OFF`.
    """

    OFF = "off"
    """No profile; the span event with the top sites is still added."""
    OTLP = "otlp"
    """An OTLP profile (``profiles/v1development``) to the OTLP profiles endpoint."""
    PPROF = "pprof"
    """A gzipped pprof file in ``{log_dir}/profiles/``."""
    BOTH = "both"
    """Both of the above."""

    @property
    def otlp(self) -> bool:
        """Whether profiles leave over OTLP."""
        return self in (Profiles.OTLP, Profiles.BOTH)

    @property
    def pprof(self) -> bool:
        """Whether profiles are written as pprof files."""
        return self in (Profiles.PPROF, Profiles.BOTH)

    def __bool__(self) -> bool:
        return self is not Profiles.OFF

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Memory levels that the CLI, alerts and the dashboard compare against.

    Args:
        rss_warning_mb: RSS above this is a warning (MB, 1 to 2**30).
        rss_critical_mb: RSS above this is critical, the host may kill the process (MB, 1 to
            2**30, not below ``rss_warning_mb``).
        system_available_min_mb: system available below this is a warning (MB, 0 to 2**30).
        system_free_min_percent: system free below this percentage is a warning (0 to 100).
    """

    rss_warning_mb: float = field(default=1000.0, metadata=_rule(minimum=1, maximum=MAX_MB))
    rss_critical_mb: float = field(default=1500.0, metadata=_rule(minimum=1, maximum=MAX_MB))
    system_available_min_mb: float = field(
        default=500.0, metadata=_rule(minimum=0, maximum=MAX_MB)
    )
    system_free_min_percent: float = field(default=25.0, metadata=_rule(minimum=0, maximum=100))


@dataclass(frozen=True, slots=True)
class DeepCaptureConfig:
    """Where a task that keeps growing allocates, traced with ``tracemalloc`` (SPEC: Events).

    Args:
        enabled: trace tasks that outgrow their start by ``rss_growth_mb``, and the next run of
            a task with the same name from its start.
        rss_growth_mb: RSS growth above a task's start that starts tracing (MB, 1 to 2**30).
        top_n: allocation sites reported on the span, largest first (1 to 1,000).
        frames: frames ``tracemalloc`` keeps per allocation (1 to 100); 0 (default): 16 when
            ``profiles`` is on, else 1 (see :meth:`tracemalloc_frames`). Above 1 a site names its
            callers too (the event up to 3, the profile all), at a higher cost while a task is
            traced.
        profiles: where each traced task's allocation profile goes: ``off`` (default),
            ``otlp``, ``pprof`` or ``both`` (SPEC: Allocation profiles).
    """

    enabled: bool = False
    rss_growth_mb: float = field(default=200.0, metadata=_rule(minimum=1, maximum=MAX_MB))
    top_n: int = field(default=10, metadata=_rule(minimum=1, maximum=MAX_TOP_N))
    # 0: a flame graph needs the callers (16), the span event alone does not (1). Measured
    # (benchmarks/deepcapture.py): tracing slows an allocation-heavy loop ~5x at 1 frame and
    # ~38x at 16; a traced task's end with 10k live blocks takes ~6 ms at 1, ~13 ms at 16.
    frames: int = field(default=0, metadata=_rule(minimum=0, maximum=100))
    profiles: Profiles = Profiles.OFF

    def tracemalloc_frames(self) -> int:
        """The frames tracing keeps: ``frames``, or when 0, 16 with profiles and 1 without."""
        if self.frames:
            return self.frames
        return PROFILE_FRAMES if self.profiles else 1


@dataclass(frozen=True, slots=True)
class MemoryMonitorConfig:
    """Task spans, periodic lines and the daily log.

    Args:
        enabled: run the monitor (periodic lines, daily log, gauges) on ``start()``.
        interval_seconds: seconds between periodic ``---`` lines (1 to 86,400: a day).
        sample_interval_ms: how often RSS is sampled for ``memory.rss.peak`` while a task runs
            (1 to 60,000).
        log_dir: directory of the daily ``memory_YYYYMMDD.log`` files; empty string: no file.
        retention_days: daily logs older than this are gzip-archived; 0 keeps them as they are
            (0 to 36,500).
        delete_archives_after_days: archived logs older than this are deleted; 0 never deletes
            (0 to 36,500).
        export_logs: which lines also leave as OpenTelemetry log records: ``events``
            (default), ``all`` or ``none``; ``true``/``false`` mean ``all``/``none``.
        task_histograms: record ``otel_memory.task.rss.growth``/``.retained`` for every task
            run (default); ``false`` saves the SDK's two histogram records per task (about a
            bare span's CPU, off the caller's thread) in services that run many tiny tasks.
        request_spans: put ``memory.rss.*`` and ``memory.task.overlap`` on every SERVER and
            CONSUMER span (other libraries' request and job spans) and record
            ``otel_memory.request.rss.growth`` (default).
        deep_capture: ``tracemalloc`` allocation sites of tasks that keep growing.
        thresholds: warning and critical levels.
    """

    enabled: bool = True
    interval_seconds: float = field(
        default=120.0, metadata=_rule(minimum=1, maximum=DAY_SECONDS)
    )
    sample_interval_ms: int = field(default=100, metadata=_rule(minimum=1, maximum=60_000))
    log_dir: str = field(default="logs", metadata=_rule(path=True))
    retention_days: int = field(default=30, metadata=_rule(minimum=0, maximum=MAX_DAYS))
    delete_archives_after_days: int = field(
        default=0, metadata=_rule(minimum=0, maximum=MAX_DAYS)
    )
    export_logs: ExportLogs = ExportLogs.EVENTS
    task_histograms: bool = True
    request_spans: bool = True
    deep_capture: DeepCaptureConfig = field(default_factory=DeepCaptureConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True, slots=True)
class MemoryProfilingConfig:
    """The per-class heap census: snapshot log, heap gauges and leak suspects.

    Args:
        enabled: take a census every ``interval_seconds`` and export the heap gauges.
        interval_seconds: seconds between snapshots (10 to 86,400: a day).
        top_n_classes: classes listed by count and by size; the rest are ``other`` (1 to
            100,000).
        leak_snapshots: a class whose count grows in this many consecutive snapshots is a suspect
            (2 to 1,000).
    """

    enabled: bool = False
    interval_seconds: float = field(default=60.0, metadata=_rule(minimum=10, maximum=DAY_SECONDS))
    top_n_classes: int = field(default=50, metadata=_rule(minimum=1, maximum=MAX_CLASSES))
    leak_snapshots: int = field(default=3, metadata=_rule(minimum=2, maximum=1_000))


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """The ``general.monitoring`` section."""

    memory_profiling: MemoryProfilingConfig = field(default_factory=MemoryProfilingConfig)
    memory_monitor: MemoryMonitorConfig = field(default_factory=MemoryMonitorConfig)


@dataclass(frozen=True, slots=True)
class GeneralConfig:
    """The ``general`` section."""

    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration; build it with :func:`load_config`."""

    general: GeneralConfig = field(default_factory=GeneralConfig)

    @property
    def monitor(self) -> MemoryMonitorConfig:
        """Shortcut to ``general.monitoring.memory_monitor``."""
        return self.general.monitoring.memory_monitor

    @property
    def profiling(self) -> MemoryProfilingConfig:
        """Shortcut to ``general.monitoring.memory_profiling``."""
        return self.general.monitoring.memory_profiling


# --------------------------------------------------------------------------- environment


def env_var_for(key_path: str) -> str:
    """The ``OTEL_PYTHON_MEMORY_*`` variable that overrides ``key_path``.

    ``general.monitoring.memory_monitor.thresholds.rss_warning_mb`` becomes
    ``OTEL_PYTHON_MEMORY_MONITOR_THRESHOLDS_RSS_WARNING_MB``.
    """
    parts = key_path.split(".")[2:]  # drop general.monitoring
    parts[0] = parts[0].removeprefix("memory_")
    return env_vars.PREFIX + "_".join(parts).upper()


def leaf_key_paths(cls: type = Config, prefix: str = "") -> list[str]:
    """Every leaf key path of the configuration tree, in declaration order."""
    paths: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            paths.extend(leaf_key_paths(hints[f.name], path + "."))
        else:
            paths.append(path)
    return paths


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The environment's overrides as a nested dict shaped like the YAML."""
    by_var = {env_var_for(path): path for path in leaf_key_paths()}
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(env_vars.PREFIX) or name in env_vars.NOT_KEYS:
            continue
        path = by_var.get(name)
        if path is None:
            raise ConfigError(
                f"{name} is not a known variable{_suggest(name, [*by_var, *env_vars.NOT_KEYS])}",
                key_path=name,
                value=raw,
            )
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _EnvValue(name, raw)
    return tree


@dataclass(frozen=True, slots=True)
class _EnvValue:
    """A value that came from an environment variable, still a string."""

    variable: str
    raw: str


# --------------------------------------------------------------------------- validation

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_T = TypeVar("_T")


def _suggest(key: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _env_bool(raw: str) -> bool | None:
    """``true``/``false`` in any of their accepted spellings, else None."""
    lowered = raw.strip().lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else None


def _coerce_env(value: _EnvValue, kind: type, path: str) -> object:
    """Turn an environment string into ``kind``, or raise naming variable and key."""
    raw = value.raw.strip()
    where = f"{path} (from {value.variable})"
    if kind is bool:
        parsed = _env_bool(raw)
        if parsed is None:
            raise ConfigError(
                f"{where} must be a boolean (true/false), got {value.raw!r}", path, value.raw
            )
        return parsed
    if issubclass(kind, Enum):
        # v0.1 took a boolean here: its spellings keep their meaning, _check_choice maps them
        parsed = _env_bool(raw)
        return raw if parsed is None else parsed
    if kind in (int, float):
        try:
            return kind(raw)
        except (ValueError, OverflowError):
            noun = "an integer" if kind is int else "a number"
            message = f"{where} must be {noun}, got {value.raw!r}"
            raise ConfigError(message, path, value.raw) from None
    return value.raw


def _check_leaf(value: object, kind: type, path: str, rule: Mapping[str, Any]) -> object:
    """Type and bounds of one leaf; returns the value converted to ``kind``."""
    where, shown = path, value
    if isinstance(value, _EnvValue):
        where, shown = f"{path} (from {value.variable})", value.raw
        value = _coerce_env(value, kind, path)
    if issubclass(kind, Enum):
        return _check_choice(value, kind, where, path, shown)
    if kind is float:
        value = _check_number(value, where, path, shown)
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_describe(value)}", path, value)
        if rule.get("path"):
            _check_path(value, where, path)
    elif isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
        noun = "a boolean" if kind is bool else "an integer"
        raise ConfigError(f"{where} must be {noun}, got {_describe(value)}", path, value)
    minimum, maximum = rule.get("minimum"), rule.get("maximum")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where} must be >= {minimum:g}, got {shown}", path, shown)
    if maximum is not None and value > maximum:
        raise ConfigError(f"{where} must be <= {maximum:g}, got {shown}", path, shown)
    return value


def _check_number(value: object, where: str, path: str, shown: object) -> float:
    """A finite int or float (never a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {_describe(value)}", path, value)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float range
        finite = False
    if not finite:
        raise ConfigError(f"{where} must be a finite number, got {shown!r}", path, shown)
    return float(value)


def _check_path(value: str, where: str, path: str) -> None:
    """Refuse a path that every file call would reject later, inside ``start()``."""
    if "\0" in value:
        raise ConfigError(f"{where} must not contain a NUL character, got {value!r}", path, value)
    try:
        os.fsencode(value)
    except UnicodeError:
        raise ConfigError(
            f"{where} must be encodable as a file name, got {value!r}", path, value
        ) from None


def _check_choice(value: object, kind: type[Enum], where: str, path: str, shown: object) -> Enum:
    """One of ``kind``'s values (any case); ``true``/``false`` where the enum allows them."""
    if isinstance(value, bool) and kind is ExportLogs:
        return ExportLogs.ALL if value else ExportLogs.NONE
    if value is False and kind is Profiles:  # YAML 1.1 reads a bare `off` as false
        return Profiles.OFF
    if isinstance(value, str):
        for member in kind:
            if value.strip().lower() == member.value:
                return member
    choices = " | ".join(str(member.value) for member in kind)
    raise ConfigError(f"{where} must be one of {choices}, got {shown!r}", path, shown)


def _build(cls: type[_T], data: object, prefix: str = "") -> _T:
    """Build dataclass ``cls`` from a mapping, validating every key and value on the way."""
    section = prefix.rstrip(".") or "the top level"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section} must be a mapping, got {_describe(data)}", section, data)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{prefix}{key} is not a known key{_suggest(str(key), known)}; "
                f"known keys here: {', '.join(known)}",
                f"{prefix}{key}",
                data[key],
            )
    values: dict[str, object] = {}
    for name, f in known.items():
        if name not in data:
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, data[name], f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            values[name] = _check_leaf(data[name], kind, f"{prefix}{name}", f.metadata)
    return cls(**values)


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (override wins)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        message = f"cannot read config file {path}: {exc.strerror or exc}"
        raise ConfigError(message, str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})", str(path)
        ) from exc
    except ValueError as exc:  # a NUL in the path
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}", str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}", str(path)) from exc
    except RecursionError as exc:  # PyYAML recurses once per nesting level
        raise ConfigError(f"config file {path} is nested too deeply", str(path)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping at the top level, got {_describe(data)}",
            str(path),
            data,
        )
    return data


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Build a validated :class:`Config` from YAML (``path`` or ``OTEL_PYTHON_MEMORY_CONFIG``)
    and ``OTEL_PYTHON_MEMORY_*`` overrides; raises :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(env_vars.OTEL_PYTHON_MEMORY_CONFIG) or None
    data: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    overrides = _env_overrides(environ)
    config = _build(Config, _merge(data, overrides))
    _check_relations(config)
    return config


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build a validated :class:`Config` from an already-parsed mapping (no environment)."""
    config = _build(Config, data)
    _check_relations(config)
    return config


def _check_relations(config: Config) -> None:
    """Rules that span two keys."""
    thresholds = config.monitor.thresholds
    if thresholds.rss_critical_mb < thresholds.rss_warning_mb:
        path = "general.monitoring.memory_monitor.thresholds.rss_critical_mb"
        raise ConfigError(
            f"{path} must be >= rss_warning_mb ({thresholds.rss_warning_mb:g}), "
            f"got {thresholds.rss_critical_mb:g}",
            path,
            thresholds.rss_critical_mb,
        )
