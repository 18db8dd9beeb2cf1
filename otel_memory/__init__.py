"""otel-memory: memory observability for long-running Python services, over OpenTelemetry.

    import otel_memory
    from otel_memory import traced_task

    otel_memory.start()                 # daily log, periodic lines, gauges (config from env/YAML)

    @traced_task("Regions Dump")
    def regions_dump() -> None: ...

The public API lives here; everything else is an implementation module.
"""

from otel_memory.config import Config, ConfigError, load_config
from otel_memory.monitor import start, stop
from otel_memory.tasks import clear_active_task, set_active_task, traced_task
from otel_memory.version import __version__
from otel_memory.watched import unwatch, watch, watch_asyncio_tasks

__all__ = [
    "Config",
    "ConfigError",
    "__version__",
    "clear_active_task",
    "load_config",
    "set_active_task",
    "start",
    "stop",
    "traced_task",
    "unwatch",
    "watch",
    "watch_asyncio_tasks",
]
