"""``examples/leak_demo.py``'s leak, kept running as a service would: run under
``opentelemetry-instrument``.

    python leak_service.py SECONDS [PER_ITERATION] [EVERY]

Every ``EVERY`` seconds (default 0.5) one "Handle Messages" task of the demo stores
``PER_ITERATION`` (default 5,000) more ``leak_demo.Message`` objects in the demo's global cache,
which never evicts them. The demo itself takes its snapshots back to back and exits in a second;
this keeps leaking long enough for the monitor's profiler (every ``interval_seconds``, >= 10 s)
to see it, as in a long-running bot.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import leak_demo  # the examples directory is not a package


def main(argv: list[str]) -> int:
    seconds = float(argv[0])
    per_iteration = int(argv[1]) if len(argv) > 1 else 5000
    every = float(argv[2]) if len(argv) > 2 else 0.5
    deadline = time.monotonic() + seconds
    first = 0
    while time.monotonic() < deadline:
        leak_demo.handle_messages(first, per_iteration, bounded=False)
        first += per_iteration
        time.sleep(every)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
