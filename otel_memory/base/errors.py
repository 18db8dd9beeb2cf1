"""The one base class of the errors otel-memory raises on purpose.

    from otel_memory.base.errors import OtelMemoryError

    try:
        ...
    except OtelMemoryError as exc:   # a message meant for the user, and an exit code
        print(exc, file=sys.stderr)
        sys.exit(exc.exit_code)
"""

from __future__ import annotations


class OtelMemoryError(Exception):
    """An error whose message is meant for the user; ``exit_code`` is what the CLI returns."""

    exit_code = 2
