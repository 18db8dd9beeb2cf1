"""The instrumentor's version: the package's own."""

from otel_memory.base.version import __version__

__all__ = ["__version__"]
