"""The ``otel-memory`` command line: ``analyze``, ``report`` and ``archive`` sub-commands.

    from otel_memory.cli import main

    exit_code = main(["analyze", "logs/", "--top", "5"])

Errors the user can fix (a missing file, a bad configuration) print one line naming the path
or the key on stderr and return 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from otel_memory.cli import analyze, archive, report
from otel_memory.cli.options import UsageError
from otel_memory.cli.reading import InputError
from otel_memory.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="otel-memory",
        description="Analyse the daily memory logs written by otel-memory's monitor.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    analyze.register(commands)
    report.register(commands)
    archive.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.run(args))
    except (InputError, ConfigError, UsageError) as exc:
        print(f"otel-memory: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `otel-memory analyze ... --above 800 | head`
        # Python flushes stdout at exit; send that flush nowhere instead of failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


__all__ = ["build_parser", "main"]
