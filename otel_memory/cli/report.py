"""``otel-memory report``: one self-contained HTML page with an interactive chart and the tables.

    otel-memory report logs/ -o report.html

The page needs no network: uPlot (MIT, vendored from npm under ``assets/``, its licence copied
into the page), the chart code and the data are inline. The chart shows RSS, VMS and system
available over time, task runs as shaded bands and as a lane of bars that stay visible at any
zoom, the warning/critical/available-minimum levels and the top peaks; drag or wheel to zoom,
hover for the time, the values and the task running. However large the logs, each series has at
most 8,000 points (min/max-preserving buckets, see :mod:`otel_memory.cli.series`), so the page
stays small.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from html import escape
from importlib import resources
from typing import Any

from otel_memory.base.logline import TIMESTAMP_FORMAT
from otel_memory.cli.options import add_analysis_arguments, exit_status, run_analysis
from otel_memory.cli.output import write_output
from otel_memory.cli.scan import naive_seconds
from otel_memory.cli.schema import Analysis
from otel_memory.cli.series import SERIES, Band, Bands, Downsampler
from otel_memory.cli.tables import Table, analysis_tables

MAX_BUCKETS = 4000
"""Time buckets of the chart: a week of lines two minutes apart is drawn nearly line by line,
and the page stays well under 2 MB however long the logs."""
UPLOT_VERSION = "1.6.32"
"""The vendored uPlot (``assets/``), as published on npm."""

_SERIES_COLOURS = {"rss": "#1f5fbf", "vms": "#8a63b8", "available": "#2e8b57"}
_BAND_COLOURS = ("#f2a541", "#5ab4ac", "#e377c2", "#8c8cff", "#bcbd22", "#17becf", "#d62728")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` sub-command."""
    parser = commands.add_parser(
        "report",
        help="write a self-contained HTML report with a chart",
        description="Write one HTML file (everything inline, no network) with an interactive "
        "chart of RSS, VMS and system available, task runs, thresholds and peaks (drag or "
        "wheel to zoom, hover for values and task), and the tables of 'analyze'.",
    )
    add_analysis_arguments(parser)
    parser.add_argument("-o", "--output", default="memory_report.html", metavar="FILE",
                        help="where to write the page, - for standard output (default "
                        "memory_report.html)")
    parser.add_argument("--force", action="store_true",
                        help="replace the output file if it exists (never a directory, "
                        "device or FIFO)")
    parser.add_argument("--title", default="Memory report", help="the page title")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``report`` with parsed arguments."""
    samples = Downsampler(MAX_BUCKETS)
    bands = Bands()
    # Runs as paired by taskruns, the one pairing analyze counts with too.
    analysis = run_analysis(args, on_point=samples.add, on_run=bands.add_run)
    page = render_html(analysis, samples, bands.bands(), title=args.title)
    written = write_output(args.output, page, force=args.force)
    if written is not None:
        print(f"wrote {written} ({len(page.encode()) / 1024:,.0f} KiB)")
    return exit_status(args, analysis)


# --------------------------------------------------------------------------- chart data


def chart_data(analysis: Analysis, samples: Downsampler, bands: list[Band]) -> dict[str, Any]:
    """What the page's script draws, as JSON-ready data (times in seconds on the analyzer's
    axis: log-local wall-clock time read as UTC)."""
    settings = analysis.settings
    max_gap = float(settings["max_seconds_per_line"] or 0)
    columns = samples.columns(max_gap)
    colours = _task_colours(bands)
    names = list(colours)
    index = {name: i for i, name in enumerate(names)}
    thresholds = [
        {"name": name, "label": label, "mb": float(settings[key] or 0), "colour": colour}
        for name, key, label, colour in (
            ("warning", "warning_mb", "RSS warning", "#e08a00"),
            ("critical", "critical_mb", "RSS critical", "#c62828"),
            ("available-min", "system_available_min_mb", "available minimum", "#2e8b57"),
        )
    ]
    data: dict[str, Any] = {
        "times": [_compact(t) for t in columns.times],
        "gaps": columns.gaps,
        **{name: columns.values[i] for i, name in enumerate(SERIES)},
        "colours": _SERIES_COLOURS,
        "tasks": names,
        "task_colours": [colours[name] for name in names],
        "bands": [
            [index[b.task], _compact(b.start), _compact(b.end), b.reason, b.runs] for b in bands
        ],
        "thresholds": thresholds,
        "peaks": [
            {"rank": rank, "t": _compact(_seconds(p.timestamp)), "mb": p.rss_mb, "task": p.task}
            for rank, p in enumerate(analysis.peaks, 1)
            if _seconds(p.timestamp) is not None
        ],
        "lines": samples.count,
        "bucket_seconds": _compact(samples.width),
    }
    return data


def _compact(value: float | None) -> float | int | None:
    """Whole seconds as ints: a third shorter in JSON."""
    if value is None:
        return None
    return int(value) if value == int(value) else value


def _seconds(stamp: str) -> float | None:
    try:
        return naive_seconds(datetime.strptime(stamp, TIMESTAMP_FORMAT))
    except ValueError:
        return None


def _task_colours(bands: list[Band]) -> dict[str, str]:
    colours: dict[str, str] = {}
    for band in bands:
        if band.task not in colours:
            colours[band.task] = _BAND_COLOURS[len(colours) % len(_BAND_COLOURS)]
    return colours


def _script_json(value: object) -> str:
    """JSON that cannot end its ``<script>`` element early, whatever the task names hold."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files("otel_memory.cli").joinpath("assets").joinpath(name).read_text("utf-8")


# --------------------------------------------------------------------------- the page


def _html_table(table: Table) -> str:
    def cell(tag: str, index: int, text: str) -> str:
        css = ' class="num"' if index in table.numeric else ""
        return f"<{tag}{css}>{escape(text)}</{tag}>"

    parts = [f'<h2>{escape(table.title)}</h2><table class="analysis">']
    if any(table.headers):
        parts.append(
            "<tr>" + "".join(cell("th", i, h) for i, h in enumerate(table.headers)) + "</tr>"
        )
    for row in table.rows:
        parts.append("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>")
    if not table.rows:
        parts.append(f'<tr><td colspan="{len(table.headers)}">(none)</td></tr>')
    parts.append("</table>")
    for note in table.notes:
        css = "note verdict-growing" if note.startswith("verdict: GROWING") else "note"
        parts.append(f'<p class="{css}">{escape(note)}</p>')
    return "\n".join(parts)


def _chart_section(data: dict[str, Any]) -> str:
    if not data["times"]:
        return '<div id="chart"><p class="chart-empty">no memory lines to chart</p></div>'
    rows = len(data["times"])
    keys = "".join(
        f'<span class="key"><span class="swatch" style="background:{colour}"></span>'
        f"{escape(task)}</span>"
        for task, colour in zip(data["tasks"], data["task_colours"], strict=True)
    )
    if data["lines"] > rows:
        width = data["bucket_seconds"]
        density = (
            f"{data['lines']:,} lines drawn as {rows:,} points: the lowest and highest of "
            f"every {width:,} s, so spikes and dips are kept."
        )
    else:
        density = f"{data['lines']:,} lines, every one drawn."
    return (
        '<div class="toolbar"><button type="button" id="reset-zoom">Reset zoom</button>'
        '<span class="hint">Drag across the chart or turn the wheel over it to zoom; '
        "double-click or Reset to see everything; click a task bar to zoom to that run, a "
        "series name to hide it, a time in the tables to find it.</span></div>\n"
        '<div id="chart" role="img" aria-label="RSS, VMS and system available over time, '
        'with task runs and thresholds"></div>\n'
        + (f'<div class="task-keys">{keys}</div>\n' if keys else "")
        + f'<p class="note chart-density">{escape(density)}</p>\n'
        "<noscript><p>The chart needs JavaScript; the tables below hold every number.</p>"
        "</noscript>"
    )


def render_html(
    analysis: Analysis, samples: Downsampler, bands: list[Band], title: str = "Memory report"
) -> str:
    """The whole page: tables, chart data, uPlot and the chart script, all inline."""
    generated = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    files = ", ".join(analysis.files[:5]) + (" …" if len(analysis.files) > 5 else "")
    data = chart_data(analysis, samples, bands)
    licence = _asset("uPlot.LICENSE")
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{len(analysis.files)} file(s): {escape(files)} · '
        f"{analysis.first or '-'} → {analysis.last or '-'} · "
        f"{analysis.lines.selected:,} lines · generated {escape(generated)}</p>",
        _chart_section(data),
        *(_html_table(t) for t in analysis_tables(analysis)),
        f"<footer>Chart drawn with uPlot {UPLOT_VERSION} by Leon Sorokin, MIT licence "
        "(its text is in this page's source, above the library, and ships as "
        "otel_memory/cli/assets/uPlot.LICENSE).</footer>",
    ]
    if data["times"]:
        body += [
            f'<script type="application/json" id="chart-data">{_script_json(data)}</script>',
            f"<script>/*! uPlot {UPLOT_VERSION} | https://github.com/leeoniya/uPlot\n"
            f"{licence}*/\n{_asset('uPlot.iife.min.js')}</script>",
            f"<script>{_asset('report.js')}</script>",
        ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_asset('uPlot.min.css')}</style>"
        f"<style>{_asset('report.css')}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    # Names from the command line may carry undecodable bytes (surrogate escapes): never let
    # one of them fail the write.
    return page.encode("utf-8", "replace").decode("utf-8")
