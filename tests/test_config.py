"""Configuration: defaults, YAML, environment overrides, and a clear error for every bad input."""

from __future__ import annotations

import pytest

from otel_memory import Config, ConfigError, load_config
from otel_memory import environment_variables as env_vars
from otel_memory.config import env_var_for, leaf_key_paths

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
