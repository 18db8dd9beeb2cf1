"""The instrumentor's version: the package's own."""

from otel_memory.version import __version__

__all__ = ["__version__"]
