"""``python -m otel_memory.cli``: the same as the ``otel-memory`` command."""

import sys

from otel_memory.cli import main

sys.exit(main())
