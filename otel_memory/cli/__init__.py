"""The ``otel-memory`` command line: ``analyze``, ``report``, ``archive`` and ``profiles``.

    from otel_memory.cli import main

    exit_code = main(["analyze", "logs/", "--top", "5"])

Exit status: 0 done, 1 ``--fail-on-breach`` and a threshold was crossed, 2 a usage or input
error. Every error the user can cause (a bad option value, a missing or damaged file, a bad
configuration, an output it will not replace) is one line on stderr naming the value, and
never a traceback: package errors (:class:`~otel_memory.base.errors.OtelMemoryError`) become their
message and exit code here, in one place.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from typing import NoReturn, cast

from otel_memory.base.config import ConfigError
from otel_memory.base.errors import OtelMemoryError
from otel_memory.base.version import __version__
from otel_memory.cli import analyze, archive, profiles, report
from otel_memory.cli.errors import UsageError, shown

PROG = "otel-memory"


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are :class:`UsageError` s: one line, no usage dump."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()  # "analyze", or "" for the top level
        raise UsageError(f"{f'{command}: ' if command else ''}{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every sub-command."""
    parser = _Parser(
        prog=PROG,
        description="Analyse the daily memory logs written by otel-memory's monitor.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    analyze.register(commands)
    report.register(commands)
    archive.register(commands)
    profiles.register(commands)
    return parser


_LONG_WORD = re.compile(r"\S{121,}")


def _one_line(message: str) -> str:
    """``message`` on one line, any very long word (a 5,000-character path) shortened."""
    text = " ".join(message.split("\n")).strip() or "error"
    return _LONG_WORD.sub(lambda m: shown(m.group()), text)


def _silence_stdout() -> None:
    """Send Python's final flush of stdout nowhere: it would fail again, with a traceback."""
    with contextlib.suppress(OSError, ValueError):  # ValueError: no descriptor (captured)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _exit_code(exc: Exception) -> int:
    """The one place where an error becomes a message on stderr and an exit code."""
    if isinstance(exc, BrokenPipeError):  # `otel-memory analyze ... --above 800 | head`
        _silence_stdout()
        return 1
    code = 2
    if isinstance(exc, OtelMemoryError):
        message, code = str(exc), exc.exit_code
    elif isinstance(exc, ConfigError):
        message = f"configuration: {exc}"
    elif isinstance(exc, OSError):  # writing stdout failed, e.g. `> /dev/full`
        _silence_stdout()
        message = f"cannot write the output: {exc.strerror or exc}"
    else:
        message = f"unexpected error ({type(exc).__name__}: {exc}); please report it"
    print(f"{PROG}: {_one_line(message)}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; the process exit code."""
    try:
        args = build_parser().parse_args(argv)
        code = int(args.run(args))
        sys.stdout.flush()
    except SystemExit as exc:  # --help and --version print, then exit 0
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the contract: never a traceback, whatever the input
        return _exit_code(exc)
    return code


__all__ = ["build_parser", "main"]
