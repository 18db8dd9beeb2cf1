"""The one name cleaner: any object given as a task name, label or span name becomes text that
every output can carry (valid UTF-8), and odd input is reported once.

    clean_name(b"Nations Dump", "task name", warn_once)    # 'Nations Dump', reported once
    clean_name("caf" + chr(0xDCE9))                          # a lone surrogate: escaped

The daily log's brackets have their own rule (no line break, no ``]``): that is the line
format's (:func:`otel_memory.base.logline.sanitize_name`), not a cleaning of the name.
"""

from __future__ import annotations

from collections.abc import Callable


def clean_name(
    name: object,
    what: str = "name",
    warn: Callable[..., object] | None = None,
    max_length: int | None = None,
) -> str:
    """``name`` as valid UTF-8 text, at most ``max_length`` characters; ``warn(key, message,
    *args)`` hears once about a name that was not a valid ``str``."""
    if type(name) is str:
        try:
            name.encode("utf-8")
            text = name
        except UnicodeEncodeError:  # lone surrogates: exporters and files need valid UTF-8
            if warn is not None:
                warn(f"{what} surrogates", "otel_memory: %s is not valid UTF-8: %r", what, name)
            text = name.encode("utf-8", "backslashreplace").decode("utf-8")
    else:
        if warn is not None:
            warn(
                f"{what} type",
                "otel_memory: %s should be a str, got %s",
                what,
                type(name).__name__,
            )
        text = _as_text(name, what, warn)
    return text if max_length is None else text[:max_length]


def _as_text(name: object, what: str, warn: Callable[..., object] | None) -> str:
    if isinstance(name, bytes | bytearray):
        return bytes(name).decode("utf-8", "backslashreplace")
    try:
        text = str(name)
    except Exception:
        return f"<{type(name).__name__}>"
    return clean_name(text, what, warn) if type(text) is str else f"<{type(name).__name__}>"
