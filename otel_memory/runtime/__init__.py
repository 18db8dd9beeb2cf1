"""Who owns and wires the parts: the :class:`Runtime` (one default instance per process) and its
:class:`Monitor` (the outputs that ``start()`` adds)."""

from otel_memory.runtime.monitor import Monitor
from otel_memory.runtime.runtime import Runtime, get_runtime

__all__ = ["Monitor", "Runtime", "get_runtime"]
