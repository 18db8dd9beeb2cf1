"""Zero-code setup: the ``memory`` instrumentor that ``opentelemetry-instrument`` loads.

    opentelemetry-instrument python app.py      # starts the monitor with env/YAML configuration

or, in code, with the providers already configured::

    from otel_memory.instrumentation import MemoryInstrumentor

    MemoryInstrumentor().instrument()           # config from OTEL_PYTHON_MEMORY_* / YAML
    MemoryInstrumentor().instrument(config="memory.yaml")
    MemoryInstrumentor().uninstrument()         # stops the monitor

``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=memory`` keeps ``opentelemetry-instrument`` from loading
it, and ``OTEL_SDK_DISABLED=true`` makes it a no-op. ``tracer_provider``, ``meter_provider`` and
``logger_provider`` keywords are used as contrib instrumentations use them.

A failure here is logged on the ``otel_memory`` logger and never raised: an exception would
stop ``opentelemetry-instrument`` from loading the instrumentors after this one, and the
application must run on without memory monitoring rather than not at all.

This module needs ``opentelemetry-instrumentation``; ``import otel_memory`` does not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

import otel_memory
from otel_memory.base.config import Config, ConfigError, load_config
from otel_memory.instrumentation.package import _instruments
from otel_memory.instrumentation.version import __version__

__all__ = ["MemoryInstrumentor", "__version__"]

_log = logging.getLogger("otel_memory")
_OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"


def _resolve_config(given: object) -> Config:
    """A ``Config`` as given, else one loaded from the YAML path given or the environment."""
    if isinstance(given, Config):
        return given
    return load_config(given)  # type: ignore[arg-type]  # None or a path; load_config checks


class MemoryInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # the base class is untyped
    """Starts the otel-memory monitor (daily log, periodic lines, gauges, log records).

    Keyword arguments of ``instrument()``: ``config`` (a ``Config`` or a YAML path; default:
    ``OTEL_PYTHON_MEMORY_CONFIG`` and ``OTEL_PYTHON_MEMORY_*``), and ``tracer_provider``,
    ``meter_provider``, ``logger_provider`` (default: the global providers, which
    ``opentelemetry-instrument`` configures before it loads instrumentors).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        """The packages this instrumentor needs: psutil."""
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        if os.environ.get(_OTEL_SDK_DISABLED, "").strip().lower() == "true":
            _log.debug("otel-memory: OTEL_SDK_DISABLED=true, memory monitoring not started")
            return
        try:
            config = _resolve_config(kwargs.get("config"))
            otel_memory.start(
                config,
                tracer_provider=kwargs.get("tracer_provider"),
                meter_provider=kwargs.get("meter_provider"),
                logger_provider=kwargs.get("logger_provider"),
            )
        except ConfigError as exc:
            _log.error("otel-memory: memory monitoring not started, bad configuration: %s", exc)
        except Exception:
            _log.exception("otel-memory: memory monitoring not started, unexpected error")

    def _uninstrument(self, **kwargs: Any) -> None:
        try:
            otel_memory.stop()
        except Exception:
            _log.exception("otel-memory: stopping memory monitoring failed")
