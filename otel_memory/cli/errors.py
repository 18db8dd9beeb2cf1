"""The command line's errors: bad options, unreadable inputs, outputs it will not write.

Each is an :class:`~otel_memory.base.errors.OtelMemoryError`; :func:`otel_memory.cli.main` turns any
of them into one line on stderr and exit code 2.
"""

from __future__ import annotations

from otel_memory.base.errors import OtelMemoryError

_SHOWN_PATH_CHARS = 120


class UsageError(OtelMemoryError):
    """A bad option or option value; the message says which, in words."""


class InputError(OtelMemoryError):
    """An input cannot be read; the message names it."""


class OutputError(OtelMemoryError):
    """An output cannot or must not be written; the message names it."""


def shown(path: object) -> str:
    """``path`` for a one-line message: at most about 120 characters, control characters escaped."""
    text = str(path)
    if len(text) > _SHOWN_PATH_CHARS:
        text = f"{text[:60]}...{text[-40:]} ({len(text):,} characters)"
    if not text.isprintable():
        text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text
