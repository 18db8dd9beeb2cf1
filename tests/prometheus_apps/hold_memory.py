"""Holds memory on demand, for the RSS alert test: run under ``opentelemetry-instrument``.

    python hold_memory.py GO_FILE MEGABYTES SECONDS

Idles until ``GO_FILE`` exists, then allocates ``MEGABYTES`` MB (pages written, so they are
resident) and keeps them until ``SECONDS`` have passed since start.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

MB = 1024 * 1024


def main(argv: list[str]) -> int:
    go, megabytes, seconds = Path(argv[0]), int(argv[1]), float(argv[2])
    deadline = time.monotonic() + seconds
    held: bytearray | None = None
    while time.monotonic() < deadline:
        if held is None and go.exists():
            held = bytearray(b"\x01") * (megabytes * MB)  # written, not calloc'ed: resident
            print(f"holding {len(held) // MB} MB", flush=True)
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
