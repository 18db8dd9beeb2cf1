"""Configuration: defaults, YAML, environment overrides, and a clear error for every bad input."""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import typing

import pytest

from otel_memory import Config, ConfigError, load_config
from otel_memory.base import environment_variables as env_vars
from otel_memory.base.config import (
    DAY_SECONDS,
    DeepCaptureConfig,
    ExportLogs,
    Profiles,
    config_from_dict,
    env_var_for,
    leaf_key_paths,
)

PROFILING = "general.monitoring.memory_profiling"
MONITOR = "general.monitoring.memory_monitor"


def write(tmp_path, text: str):
    path = tmp_path / "memory.yaml"
    path.write_text(text)
    return path


def test_defaults_follow_the_spec():
    config = load_config(environ={})
    assert config == Config()
    assert config.profiling.enabled is False
    assert config.profiling.interval_seconds == 60
    assert config.profiling.top_n_classes == 50
    assert config.monitor.enabled is True
    assert config.monitor.interval_seconds == 120
    assert config.monitor.log_dir == "logs"
    assert config.monitor.retention_days == 30
    t = config.monitor.thresholds
    assert (t.rss_warning_mb, t.rss_critical_mb) == (1000, 1500)
    assert (t.system_available_min_mb, t.system_free_min_percent) == (500, 25)


def test_yaml_values_and_environment_overrides(tmp_path):
    path = write(
        tmp_path,
        """
general:
  monitoring:
    memory_profiling: {enabled: true, interval_seconds: 30, top_n_classes: 5}
    memory_monitor:
      log_dir: /var/log/bot
      thresholds: {rss_warning_mb: 800}
""",
    )
    environ = {
        "OTEL_PYTHON_MEMORY_MONITOR_INTERVAL_SECONDS": "15",
        "OTEL_PYTHON_MEMORY_PROFILING_ENABLED": "false",
        "OTEL_PYTHON_MEMORY_MONITOR_THRESHOLDS_RSS_CRITICAL_MB": "900.5",
    }
    config = load_config(path, environ=environ)
    assert config.profiling.enabled is False  # environment wins over YAML
    assert config.profiling.top_n_classes == 5
    assert config.monitor.interval_seconds == 15
    assert config.monitor.log_dir == "/var/log/bot"
    assert config.monitor.thresholds.rss_warning_mb == 800
    assert config.monitor.thresholds.rss_critical_mb == 900.5


def test_config_file_named_by_the_environment(tmp_path):
    path = write(tmp_path, "general: {monitoring: {memory_monitor: {log_dir: here}}}")
    config = load_config(environ={env_vars.OTEL_PYTHON_MEMORY_CONFIG: str(path)})
    assert config.monitor.log_dir == "here"


def test_every_key_has_a_documented_environment_variable():
    documented = {
        value for name, value in vars(env_vars).items() if name.startswith("OTEL_")
    } - env_vars.NOT_KEYS
    assert {env_var_for(path) for path in leaf_key_paths()} == documented


def test_spec_example_message():
    with pytest.raises(ConfigError) as info:
        load_config(environ={"OTEL_PYTHON_MEMORY_PROFILING_INTERVAL_SECONDS": "5"})
    assert "general.monitoring.memory_profiling.interval_seconds" in str(info.value)
    assert "must be >= 10, got 5" in str(info.value)


BAD_YAML = [
    # (yaml text, key path in the message, a fragment of the rule)
    ("general: {monitoring: {memory_profiling: {interval_seconds: 5}}}", f"{PROFILING}.interval_seconds", "must be >= 10, got 5"),
    ("general: {monitoring: {memory_profiling: {top_n_classes: 0}}}", f"{PROFILING}.top_n_classes", "must be >= 1, got 0"),
    ("general: {monitoring: {memory_profiling: {top_n_classes: 2.5}}}", f"{PROFILING}.top_n_classes", "must be an integer, got 2.5"),
    ("general: {monitoring: {memory_profiling: {enabled: 'yes please'}}}", f"{PROFILING}.enabled", "must be a boolean, got 'yes please'"),
    ("general: {monitoring: {memory_profiling: {leak_snapshots: 1}}}", f"{PROFILING}.leak_snapshots", "must be >= 2, got 1"),
    ("general: {monitoring: {memory_monitor: {interval_seconds: 0}}}", f"{MONITOR}.interval_seconds", "must be >= 1, got 0"),
    ("general: {monitoring: {memory_monitor: {interval_seconds: true}}}", f"{MONITOR}.interval_seconds", "must be a number, got True"),
    ("general: {monitoring: {memory_monitor: {interval_seconds: .nan}}}", f"{MONITOR}.interval_seconds", "must be a finite number"),
    ("general: {monitoring: {memory_monitor: {log_dir: 42}}}", f"{MONITOR}.log_dir", "must be a string, got 42"),
    ("general: {monitoring: {memory_monitor: {retention_days: -1}}}", f"{MONITOR}.retention_days", "must be >= 0, got -1"),
    ("general: {monitoring: {memory_monitor: {thresholds: {rss_warning_mb: fast}}}}", f"{MONITOR}.thresholds.rss_warning_mb", "must be a number, got 'fast'"),
    ("general: {monitoring: {memory_monitor: {thresholds: {system_free_min_percent: 120}}}}", f"{MONITOR}.thresholds.system_free_min_percent", "must be <= 100, got 120"),
    ("general: {monitoring: {memory_monitor: {thresholds: {rss_warning_mb: 1200, rss_critical_mb: 1100}}}}", f"{MONITOR}.thresholds.rss_critical_mb", "must be >= rss_warning_mb"),
    ("general: {monitoring: {memory_monitr: {}}}", "general.monitoring.memory_monitr", "did you mean memory_monitor?"),
    ("general: {monitoring: {memory_monitor: {intervall_seconds: 3}}}", f"{MONITOR}.intervall_seconds", "did you mean interval_seconds?"),
    ("general: [1, 2]", "general", "must be a mapping, got [1, 2]"),
    ("general: {monitoring: {memory_monitor: 7}}", MONITOR, "must be a mapping, got 7"),
    ("- just\n- a list\n", "memory.yaml", "must hold a mapping at the top level"),
    ("general: {monitoring: [unclosed\n", "memory.yaml", "is not valid YAML"),
]


@pytest.mark.parametrize(("text", "key_path", "rule"), BAD_YAML, ids=[b[1] + ":" + b[2][:20] for b in BAD_YAML])
def test_bad_yaml_names_key_value_and_rule(tmp_path, text, key_path, rule):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert key_path in str(info.value)
    assert key_path in info.value.key_path
    assert rule in str(info.value)


BAD_ENV = [
    ("OTEL_PYTHON_MEMORY_MONITOR_ENABLED", "maybe", "must be a boolean (true/false), got 'maybe'"),
    ("OTEL_PYTHON_MEMORY_PROFILING_TOP_N_CLASSES", "ten", "must be an integer, got 'ten'"),
    ("OTEL_PYTHON_MEMORY_MONITOR_INTERVAL_SECONDS", "0.5", "must be >= 1, got 0.5"),
    ("OTEL_PYTHON_MEMORY_MONITOR_LOG_DIRR", "x", "did you mean OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR?"),
]


@pytest.mark.parametrize(("name", "value", "rule"), BAD_ENV)
def test_bad_environment_names_the_variable_and_value(name, value, rule):
    with pytest.raises(ConfigError) as info:
        load_config(environ={name: value})
    assert name in str(info.value)
    assert rule in str(info.value)
    assert info.value.value == value


def test_unreadable_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_config(missing, environ={})


def test_directory_instead_of_file_is_unreadable(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config file .*: Is a directory"):
        load_config(tmp_path, environ={})


def test_empty_file_means_defaults(tmp_path):
    assert load_config(write(tmp_path, ""), environ={}) == Config()


def test_config_is_frozen():
    config = Config()
    with pytest.raises(AttributeError):
        config.monitor.interval_seconds = 1  # type: ignore[misc]


# --------------------------------------------------------------------------- v0.2: export_logs


def test_task_histograms_default_on_and_off_from_the_environment():
    assert load_config(environ={}).monitor.task_histograms is True
    environ = {env_var_for("general.monitoring.memory_monitor.task_histograms"): "false"}
    assert load_config(environ=environ).monitor.task_histograms is False


def test_export_logs_defaults_to_events():
    assert load_config(environ={}).monitor.export_logs is ExportLogs.EVENTS
    assert ExportLogs.EVENTS == "events"


@pytest.mark.parametrize(
    ("yaml_value", "expected"),
    [
        ("events", ExportLogs.EVENTS),
        ("all", ExportLogs.ALL),
        ("none", ExportLogs.NONE),
        ("ALL", ExportLogs.ALL),
        ("true", ExportLogs.ALL),  # v0.1 booleans keep their meaning
        ("false", ExportLogs.NONE),
        ("yes", ExportLogs.ALL),  # YAML 1.1 booleans too
        ("off", ExportLogs.NONE),
    ],
)
def test_export_logs_from_yaml(tmp_path, yaml_value, expected):
    path = write(tmp_path, f"general: {{monitoring: {{memory_monitor: {{export_logs: {yaml_value}}}}}}}")
    assert load_config(path, environ={}).monitor.export_logs is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("events", ExportLogs.EVENTS), (" All ", ExportLogs.ALL), ("none", ExportLogs.NONE),
     ("true", ExportLogs.ALL), ("1", ExportLogs.ALL), ("false", ExportLogs.NONE), ("off", ExportLogs.NONE)],
)
def test_export_logs_from_environment(raw, expected):
    config = load_config(environ={env_vars.OTEL_PYTHON_MEMORY_MONITOR_EXPORT_LOGS: raw})
    assert config.monitor.export_logs is expected


def test_export_logs_is_false_only_for_none():
    # v0.1 code reads ``if monitor.export_logs:``; it must keep meaning "export anything"
    assert ExportLogs.EVENTS and ExportLogs.ALL
    assert not ExportLogs.NONE


def test_v01_boolean_dict_still_builds():
    config = config_from_dict({"general": {"monitoring": {"memory_monitor": {"export_logs": False}}}})
    assert config.monitor.export_logs is ExportLogs.NONE


@pytest.mark.parametrize("bad", ["some", "", "2", "[all]"])
def test_export_logs_bad_value_names_the_choices(tmp_path, bad):
    with pytest.raises(ConfigError) as info:
        load_config(environ={env_vars.OTEL_PYTHON_MEMORY_MONITOR_EXPORT_LOGS: bad})
    assert f"{MONITOR}.export_logs" in str(info.value)
    assert "must be one of events | all | none" in str(info.value)
    with pytest.raises(ConfigError, match=re.escape("must be one of events | all | none, got 3")):
        load_config(write(tmp_path, "general: {monitoring: {memory_monitor: {export_logs: 3}}}"), environ={})


# --------------------------------------------------------------------------- v0.2: deep_capture


def test_deep_capture_defaults_and_overrides(tmp_path):
    deep = load_config(environ={}).monitor.deep_capture
    assert deep == DeepCaptureConfig(enabled=False, rss_growth_mb=200, top_n=10, frames=0)
    assert deep.tracemalloc_frames() == 1  # no profiles: the allocating line is enough
    path = write(tmp_path, "general: {monitoring: {memory_monitor: {deep_capture: {enabled: true, top_n: 3}}}}")
    environ = {
        env_vars.OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_RSS_GROWTH_MB: "50.5",
        env_vars.OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_FRAMES: "5",
    }
    deep = load_config(path, environ=environ).monitor.deep_capture
    assert deep == DeepCaptureConfig(enabled=True, rss_growth_mb=50.5, top_n=3, frames=5)
    environ = {env_vars.OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_ENABLED: "false"}
    assert load_config(path, environ=environ).monitor.deep_capture.enabled is False


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [("rss_growth_mb", 0.5, "must be >= 1, got 0.5"), ("top_n", 0, "must be >= 1, got 0"),
     ("frames", -1, "must be >= 0, got -1"), ("frames", 101, "must be <= 100, got 101"),
     ("top_n", 1001, "must be <= 1000, got 1001"), ("enabled", "sometimes", "must be a boolean")],
)
def test_deep_capture_bounds(key, value, rule):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"general": {"monitoring": {"memory_monitor": {"deep_capture": {key: value}}}}})
    assert info.value.key_path == f"{MONITOR}.deep_capture.{key}"
    assert rule in str(info.value)


# --------------------------------------------------------------------------- v0.3: profiles


def test_profiles_default_off_and_every_spelling(tmp_path):
    assert load_config(environ={}).monitor.deep_capture.profiles is Profiles.OFF
    for text, expected in [("off", Profiles.OFF), ("otlp", Profiles.OTLP), ("PPROF", Profiles.PPROF),
                           ("both", Profiles.BOTH)]:
        # a bare YAML `off` arrives as false: it must still mean off
        path = write(tmp_path, f"general: {{monitoring: {{memory_monitor: {{deep_capture: {{profiles: {text}}}}}}}}}")
        assert load_config(path, environ={}).monitor.deep_capture.profiles is expected
    environ = {env_vars.OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_PROFILES: "both"}
    profiles = load_config(environ=environ).monitor.deep_capture.profiles
    assert profiles is Profiles.BOTH and profiles.otlp and profiles.pprof
    assert Profiles.OTLP.otlp and not Profiles.OTLP.pprof and not Profiles.OFF
    assert DeepCaptureConfig(profiles=Profiles.PPROF).tracemalloc_frames() == 16  # a stack
    assert DeepCaptureConfig(profiles=Profiles.PPROF, frames=4).tracemalloc_frames() == 4


@pytest.mark.parametrize("value", ["flamegraph", True, 3])
def test_profiles_rejects_other_values_naming_key_value_rule(value):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"general": {"monitoring": {"memory_monitor": {"deep_capture": {"profiles": value}}}}})
    assert info.value.key_path == f"{MONITOR}.deep_capture.profiles"
    assert f"must be one of off | otlp | pprof | both, got {value!r}" in str(info.value)


def test_profiles_env_variable_names_itself():
    environ = {env_vars.OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_PROFILES: "gzip"}
    with pytest.raises(ConfigError, match=r"OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_PROFILES.*got 'gzip'"):
        load_config(environ=environ)


# --------------------------------------------------------------------------- v0.2: maxima, NaN


def _numeric_leaves():
    """(key path, field) of every numeric key of the tree."""
    out = []
    for path in leaf_key_paths():
        node = Config
        for part in path.split(".")[:-1]:
            node = typing.get_type_hints(node)[part]
        leaf = path.split(".")[-1]
        kind = typing.get_type_hints(node)[leaf]
        if kind in (int, float):
            out.append((path, kind, {f.name: f for f in dataclasses.fields(node)}[leaf].metadata))
    return out


NUMERIC = _numeric_leaves()


def _nested(path: str, value: object) -> dict:
    tree: dict = {}
    node = tree
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return tree


def test_every_numeric_key_has_a_maximum():
    assert len(NUMERIC) >= 14
    for path, _kind, rule in NUMERIC:
        assert rule.get("maximum") is not None, path


@pytest.mark.parametrize(("path", "kind", "rule"), NUMERIC, ids=[n[0].split(".", 2)[2] for n in NUMERIC])
def test_the_maximum_is_accepted_and_above_it_is_refused(path, kind, rule):
    maximum = rule["maximum"]
    if path.endswith("rss_warning_mb"):  # critical must stay >= warning
        data = _merge_dicts(_nested(path, maximum), _nested(f"{MONITOR}.thresholds.rss_critical_mb", maximum))
    else:
        data = _nested(path, maximum)
    config_from_dict(data)
    above = kind(maximum * 10)
    with pytest.raises(ConfigError) as info:
        config_from_dict(_nested(path, above))
    assert info.value.key_path == path
    assert f"must be <= {maximum:g}" in str(info.value)
    with pytest.raises(ConfigError, match=f"{path} \\(from {env_var_for(path)}\\) must be <="):
        load_config(environ={env_var_for(path): str(above)})


def _merge_dicts(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge_dicts(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def test_interval_that_would_overflow_the_thread_wait_is_refused(tmp_path):
    # 1e10 s is above threading.TIMEOUT_MAX: accepted in v0.1, the periodic thread then died
    path = write(tmp_path, "general: {monitoring: {memory_monitor: {interval_seconds: 1.0e+10}}}")
    with pytest.raises(ConfigError, match=f"{MONITOR}.interval_seconds must be <= 86400, got 1"):
        load_config(path, environ={})
    name = env_vars.OTEL_PYTHON_MEMORY_MONITOR_INTERVAL_SECONDS
    with pytest.raises(ConfigError, match=f"\\(from {name}\\) must be <= 86400, got 1e10"):
        load_config(environ={name: "1e10"})
    assert DAY_SECONDS < threading.TIMEOUT_MAX


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", "1" + "0" * 400])
def test_nan_infinity_and_huge_numbers_are_refused_from_yaml(tmp_path, text):
    path = write(tmp_path, f"general: {{monitoring: {{memory_monitor: {{thresholds: {{rss_warning_mb: {text}}}}}}}}}")
    with pytest.raises(ConfigError, match=f"{MONITOR}.thresholds.rss_warning_mb must be a finite number"):
        load_config(path, environ={})


@pytest.mark.parametrize("raw", ["nan", "inf", "-Infinity", "1e400"])
def test_nan_and_infinity_are_refused_from_the_environment(raw):
    name = env_vars.OTEL_PYTHON_MEMORY_MONITOR_INTERVAL_SECONDS
    with pytest.raises(ConfigError, match=f"\\(from {name}\\) must be a finite number, got '{raw}'"):
        load_config(environ={name: raw})


@pytest.mark.parametrize("raw", [".nan", ".inf", "1e3"])
def test_integer_keys_refuse_floats_nan_and_infinity(tmp_path, raw):
    path = write(tmp_path, f"general: {{monitoring: {{memory_monitor: {{sample_interval_ms: {raw}}}}}}}")
    with pytest.raises(ConfigError, match=f"{MONITOR}.sample_interval_ms must be an integer"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(environ={env_vars.OTEL_PYTHON_MEMORY_MONITOR_SAMPLE_INTERVAL_MS: "inf"})


# --------------------------------------------------------------------------- v0.2: files, paths


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"general:\n  monitoring: {}\n\xff\xfe", "log_dir: caf\u00e9".encode("latin-1")],
    ids=["png", "stray-bytes", "latin-1"],
)
def test_binary_or_non_utf8_file_is_a_config_error_naming_the_file(tmp_path, content):
    path = tmp_path / "memory.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert "is not UTF-8 text" in str(info.value)
    assert info.value.key_path == str(path)


def test_control_characters_in_a_utf8_file_are_a_config_error(tmp_path):
    path = tmp_path / "memory.yaml"
    path.write_bytes(b"general: {monitoring: {memory_monitor: {log_dir: a\x00b}}}")
    with pytest.raises(ConfigError, match=r"memory\.yaml is not valid YAML"):
        load_config(path, environ={})


def test_config_path_with_nul_is_a_config_error():
    with pytest.raises(ConfigError, match=re.escape("cannot read config file 'a\\x00b.yaml': embedded null byte")):
        load_config("a\0b.yaml", environ={})


def test_deeply_nested_yaml_is_a_config_error(tmp_path):
    path = write(tmp_path, "general: " + "[" * 50_000 + "]" * 50_000)
    with pytest.raises(ConfigError, match=r"memory\.yaml is nested too deeply"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("text", "rule"),
    [('"logs\\0dir"', "must not contain a NUL character"), ('"logs\\ud800"', "must be encodable as a file name")],
)
def test_log_dir_that_no_file_call_accepts_is_refused(tmp_path, text, rule):
    path = write(tmp_path, f"general: {{monitoring: {{memory_monitor: {{log_dir: {text}}}}}}}")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key_path == f"{MONITOR}.log_dir"
    assert rule in str(info.value)
    with pytest.raises(ConfigError, match=f"{MONITOR}.log_dir \\(from .*LOG_DIR\\) must not contain a NUL"):
        load_config(environ={env_vars.OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR: "x\0y"})


def test_log_dir_with_undecodable_bytes_from_the_os_is_kept():
    # os.fsdecode turns an undecodable byte into a lone surrogate; it must round-trip, not fail
    raw = os.fsdecode(b"logs-\xff")
    config = load_config(environ={env_vars.OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR: raw})
    assert os.fsencode(config.monitor.log_dir) == b"logs-\xff"


V01_CONFIG = """
general:
  monitoring:
    memory_profiling: {enabled: true, interval_seconds: 60, top_n_classes: 50}
    memory_monitor:
      enabled: true
      interval_seconds: 120
      log_dir: logs
      retention_days: 30
      sample_interval_ms: 100
      export_logs: true
      thresholds: {rss_warning_mb: 1000, rss_critical_mb: 1500, system_available_min_mb: 500, system_free_min_percent: 25}
"""


def test_a_v01_config_is_still_valid(tmp_path):
    config = load_config(write(tmp_path, V01_CONFIG), environ={})
    assert config.monitor.export_logs is ExportLogs.ALL
    assert config.profiling.enabled is True
