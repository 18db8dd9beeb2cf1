"""Environment variables read by otel-memory, one documented constant each.

Each ``OTEL_PYTHON_MEMORY_<SECTION>_<KEY>`` overrides the YAML key of the same path under
``general.monitoring`` (``memory_monitor`` -> ``MONITOR``, ``memory_profiling`` -> ``PROFILING``).
Booleans accept true/false, 1/0, yes/no, on/off.
"""

PREFIX = "OTEL_PYTHON_MEMORY_"

OTEL_PYTHON_MEMORY_CONFIG = "OTEL_PYTHON_MEMORY_CONFIG"
"""Path of the YAML configuration file."""

OTEL_PYTHON_MEMORY_PROFILING_ENABLED = "OTEL_PYTHON_MEMORY_PROFILING_ENABLED"
"""``memory_profiling.enabled``: take heap censuses (snapshot log, heap gauges, leak suspects)."""

OTEL_PYTHON_MEMORY_PROFILING_INTERVAL_SECONDS = "OTEL_PYTHON_MEMORY_PROFILING_INTERVAL_SECONDS"
"""``memory_profiling.interval_seconds``: seconds between snapshots (10 to 86,400)."""

OTEL_PYTHON_MEMORY_PROFILING_TOP_N_CLASSES = "OTEL_PYTHON_MEMORY_PROFILING_TOP_N_CLASSES"
"""``memory_profiling.top_n_classes``: classes listed by count and by size (1 to 100,000)."""

OTEL_PYTHON_MEMORY_PROFILING_LEAK_SNAPSHOTS = "OTEL_PYTHON_MEMORY_PROFILING_LEAK_SNAPSHOTS"
"""``memory_profiling.leak_snapshots``: growing snapshots in a row that make a suspect (2-1,000)."""

OTEL_PYTHON_MEMORY_MONITOR_ENABLED = "OTEL_PYTHON_MEMORY_MONITOR_ENABLED"
"""``memory_monitor.enabled``: periodic lines, daily log and gauges on ``start()``."""

OTEL_PYTHON_MEMORY_MONITOR_INTERVAL_SECONDS = "OTEL_PYTHON_MEMORY_MONITOR_INTERVAL_SECONDS"
"""``memory_monitor.interval_seconds``: seconds between periodic ``---`` lines (1 to 86,400)."""

OTEL_PYTHON_MEMORY_MONITOR_SAMPLE_INTERVAL_MS = "OTEL_PYTHON_MEMORY_MONITOR_SAMPLE_INTERVAL_MS"
"""``memory_monitor.sample_interval_ms``: RSS sampling period for task peaks, milliseconds."""

OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR = "OTEL_PYTHON_MEMORY_MONITOR_LOG_DIR"
"""``memory_monitor.log_dir``: directory of the daily log files (empty: no file)."""

OTEL_PYTHON_MEMORY_MONITOR_RETENTION_DAYS = "OTEL_PYTHON_MEMORY_MONITOR_RETENTION_DAYS"
"""``memory_monitor.retention_days``: daily logs older than this are gzip-archived (0: never)."""

OTEL_PYTHON_MEMORY_MONITOR_DELETE_ARCHIVES_AFTER_DAYS = (
    "OTEL_PYTHON_MEMORY_MONITOR_DELETE_ARCHIVES_AFTER_DAYS"
)
"""``memory_monitor.delete_archives_after_days``: delete archives older than this (0: never)."""

OTEL_PYTHON_MEMORY_MONITOR_EXPORT_LOGS = "OTEL_PYTHON_MEMORY_MONITOR_EXPORT_LOGS"
"""``memory_monitor.export_logs``: lines sent as OTel log records: ``events``, ``all`` or ``none``
(a boolean still works: true = ``all``, false = ``none``)."""

OTEL_PYTHON_MEMORY_MONITOR_TASK_HISTOGRAMS = "OTEL_PYTHON_MEMORY_MONITOR_TASK_HISTOGRAMS"
"""``memory_monitor.task_histograms``: record the per-task RSS growth/retained histograms."""
OTEL_PYTHON_MEMORY_MONITOR_REQUEST_SPANS = "OTEL_PYTHON_MEMORY_MONITOR_REQUEST_SPANS"
"""``memory_monitor.request_spans``: memory attributes on every SERVER and CONSUMER span."""

OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_ENABLED = "OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_ENABLED"
"""``memory_monitor.deep_capture.enabled``: trace where growing tasks allocate (tracemalloc)."""

OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_RSS_GROWTH_MB = (
    "OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_RSS_GROWTH_MB"
)
"""``memory_monitor.deep_capture.rss_growth_mb``: task RSS growth that starts tracing, MB (>= 1)."""

OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_TOP_N = "OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_TOP_N"
"""``memory_monitor.deep_capture.top_n``: allocation sites reported per task (1 to 1,000)."""

OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_FRAMES = "OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_FRAMES"
"""``memory_monitor.deep_capture.frames``: frames kept per allocation (1 to 100; 0: 16 with
allocation profiles, else 1)."""

OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_PROFILES = (
    "OTEL_PYTHON_MEMORY_MONITOR_DEEP_CAPTURE_PROFILES"
)
"""``memory_monitor.deep_capture.profiles``: where traced tasks' allocation profiles go: ``off``,
``otlp``, ``pprof`` or ``both``."""

OTEL_PYTHON_MEMORY_MONITOR_THRESHOLDS_RSS_WARNING_MB = (
    "OTEL_PYTHON_MEMORY_MONITOR_THRESHOLDS_RSS_WARNING_MB"
)
"""``memory_monitor.thresholds.rss_warning_mb``: RSS warning level, MB."""

OTEL_PYTHON_MEMORY_MONITOR_THRESHOLDS_RSS_CRITICAL_MB = (
    "OTEL_PYTHON_MEMORY_MONITOR_THRESHOLDS_RSS_CRITICAL_MB"
)
"""``memory_monitor.thresholds.rss_critical_mb``: RSS critical level, MB."""

OTEL_PYTHON_MEMORY_MONITOR_THRESHOLDS_SYSTEM_AVAILABLE_MIN_MB = (
    "OTEL_PYTHON_MEMORY_MONITOR_THRESHOLDS_SYSTEM_AVAILABLE_MIN_MB"
)
"""``memory_monitor.thresholds.system_available_min_mb``: lowest healthy system available, MB."""

OTEL_PYTHON_MEMORY_MONITOR_THRESHOLDS_SYSTEM_FREE_MIN_PERCENT = (
    "OTEL_PYTHON_MEMORY_MONITOR_THRESHOLDS_SYSTEM_FREE_MIN_PERCENT"
)
"""``memory_monitor.thresholds.system_free_min_percent``: lowest healthy system free, percent."""

NOT_KEYS = frozenset({OTEL_PYTHON_MEMORY_CONFIG})
"""Variables with the prefix that do not override a single key."""
