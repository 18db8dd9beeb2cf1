"""``otel-memory analyze``: peaks, per-task memory, threshold time, system lows, idle trend.

    otel-memory analyze logs/                       # every memory_YYYYMMDD.log[.gz] in logs/
    otel-memory analyze 'logs/memory_202511*' --top 20 --task "Nations Dump Processing"
    otel-memory analyze logs/ --above 800           # only the lines with RSS above 800 MB
    otel-memory analyze logs/ --json > analysis.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import TextIO

from otel_memory.cli.options import add_analysis_arguments, exit_status, megabytes, run_analysis
from otel_memory.cli.pipeline import AboveSink
from otel_memory.cli.schema import Analysis
from otel_memory.cli.tables import Table, analysis_tables


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``analyze`` sub-command."""
    parser = commands.add_parser(
        "analyze",
        help="summarise daily memory logs",
        description="Read daily memory logs (streaming, plain or gzip) and print peaks, memory "
        "by task, time above thresholds, the lowest system memory and the idle RSS trend.",
    )
    add_analysis_arguments(parser)
    parser.add_argument("--above", type=megabytes, metavar="MB",
                        help="print only the lines whose RSS is above MB (like grep), "
                        "as file:line:text")
    parser.add_argument("--json", action="store_true",
                        help="machine-readable output (stable keys); with --above, one JSON "
                        "object per matching line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``analyze`` with parsed arguments."""
    out = sys.stdout
    if args.above is not None:
        analysis = run_analysis(
            args, above_mb=args.above, on_above=_matching_lines(out, args.json),
            progress=not args.json,
        )  # fmt: skip
        return exit_status(args, analysis)
    analysis = run_analysis(args, progress=not args.json)
    if args.json:
        json.dump(dataclasses.asdict(analysis), out, indent=2, allow_nan=False)
        out.write("\n")
    else:
        out.write(render_text(analysis))
    return exit_status(args, analysis)


def _matching_lines(out: TextIO, as_json: bool) -> AboveSink:
    """Where ``--above`` sends each matching line: ``file:line:text`` or a JSON object."""

    def emit(file: str, line: int, text: str) -> None:
        if as_json:
            out.write(json.dumps({"file": file, "line": line, "text": text}) + "\n")
        else:
            out.write(f"{file}:{line}:{text}\n")

    return emit


def render_table(table: Table) -> str:
    """One table as aligned plain text, its notes after it."""
    lines = [f"=== {table.title} ==="]
    if table.rows:
        cells = [table.headers, *table.rows] if any(table.headers) else table.rows
        widths = [max(len(row[i]) for row in cells) for i in range(len(table.headers))]
        for row in cells:
            padded = [
                cell.rjust(widths[i]) if i in table.numeric else cell.ljust(widths[i])
                for i, cell in enumerate(row)
            ]
            lines.append("  ".join(padded).rstrip())
    else:
        lines.append("(none)")
    lines.extend(table.notes)
    return "\n".join(lines) + "\n"


def render_text(analysis: Analysis) -> str:
    """Every table of the analysis, blank lines between."""
    return "\n".join(render_table(t) for t in analysis_tables(analysis))
