"""otel-memory: memory observability for long-running Python services, over OpenTelemetry.

    import otel_memory
    from otel_memory import traced_task

    otel_memory.start()                 # daily log, periodic lines, gauges (config from env/YAML)

    @traced_task("Regions Dump")
    def regions_dump() -> None: ...

The public API lives here. Names are loaded on first use (PEP 562), so importing the package,
or its CLI, loads neither OpenTelemetry nor psutil until a name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from otel_memory.base.version import __version__

if TYPE_CHECKING:
    from otel_memory.activity.watched import unwatch, watch, watch_asyncio_tasks
    from otel_memory.api import clear_active_task, set_active_task, start, stop, traced_task
    from otel_memory.base.config import Config, ConfigError, load_config

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

_HOMES = {
    "Config": "otel_memory.base.config",
    "ConfigError": "otel_memory.base.config",
    "load_config": "otel_memory.base.config",
    "clear_active_task": "otel_memory.api",
    "set_active_task": "otel_memory.api",
    "start": "otel_memory.api",
    "stop": "otel_memory.api",
    "traced_task": "otel_memory.api",
    "unwatch": "otel_memory.activity.watched",
    "watch": "otel_memory.activity.watched",
    "watch_asyncio_tasks": "otel_memory.activity.watched",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'otel_memory' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
