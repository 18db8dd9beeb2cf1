"""``otel-memory report``: one self-contained HTML page with a chart and the analysis tables.

    otel-memory report logs/ -o report.html

The page needs no network and no JavaScript: inline CSS and one inline SVG showing RSS, VMS and
system available over time, task bands (START..END) shaded, the warning and critical levels as
dashed lines. However large the logs, each series has at most 2,000 points (min/max-preserving
buckets, see :mod:`otel_memory.cli.series`), so the page stays small.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from otel_memory.cli.options import add_analysis_arguments, run_analysis
from otel_memory.cli.series import SERIES, Band, Bands, Downsampler
from otel_memory.cli.stats import Analysis, format_seconds
from otel_memory.cli.tables import Table, analysis_tables

WIDTH, HEIGHT = 1200, 480
LEFT, RIGHT, TOP, BOTTOM = 76, 24, 20, 58
MAX_BUCKETS = 1000

_SERIES_STYLE = {  # name -> (label, colour)
    "rss": ("RSS", "#1f5fbf"),
    "vms": ("VMS", "#8a63b8"),
    "available": ("System available", "#2e8b57"),
}
_BAND_COLOURS = ("#f2a541", "#5ab4ac", "#e377c2", "#8c8cff", "#bcbd22", "#17becf", "#d62728")
_TIME_STEPS = (
    60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400,
)  # fmt: skip


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` sub-command."""
    parser = commands.add_parser(
        "report",
        help="write a self-contained HTML report with a chart",
        description="Write one HTML file (inline CSS and SVG, no network, no JavaScript) "
        "with a chart of RSS, VMS and system available, task bands, thresholds and the "
        "tables of 'analyze'.",
    )
    add_analysis_arguments(parser)
    parser.add_argument("-o", "--output", default="memory_report.html", metavar="FILE",
                        help="where to write the page (default memory_report.html)")
    parser.add_argument("--title", default="Memory report", help="the page title")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``report`` with parsed arguments."""
    samples = Downsampler(MAX_BUCKETS)
    bands = Bands()
    analysis = run_analysis(args, on_point=samples.add, on_band=bands.add)
    page = render_html(analysis, samples, bands.bands(), title=args.title)
    output = Path(args.output)
    _write_atomically(output, page)
    print(f"wrote {output} ({len(page.encode()) / 1024:,.0f} KiB)")
    return 0


def _write_atomically(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- scales


@dataclass(frozen=True, slots=True)
class Scale:
    """A linear map from data to pixels."""

    domain_low: float
    domain_high: float
    range_low: float
    range_high: float

    def __call__(self, value: float) -> float:
        span = self.domain_high - self.domain_low
        fraction = (value - self.domain_low) / span if span else 0.5
        return self.range_low + fraction * (self.range_high - self.range_low)


def nice_step(span: float, count: int) -> float:
    """1, 2 or 5 times a power of ten, so that ``span`` holds about ``count`` steps."""
    raw = max(span, 1e-9) / count
    power = 10 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _time_ticks(low: float, high: float) -> tuple[list[float], str]:
    """Tick times on round minutes/hours/days and the strftime format for their labels."""
    span = high - low
    step = next((s for s in _TIME_STEPS if span / s <= 8), _TIME_STEPS[-1])
    first = float(math.ceil(low / step) * step)
    ticks = [first + i * step for i in range(int((high - first) // step) + 1)]
    if step >= 86400:
        fmt = "%Y-%m-%d"
    elif span > 86400:
        fmt = "%m-%d %H:%M"
    else:
        fmt = "%H:%M"
    return ticks, fmt


def _label(t: float, fmt: str) -> str:
    return datetime.strptime(format_seconds(t), "%Y-%m-%d %H:%M:%S").strftime(fmt)


# --------------------------------------------------------------------------- the chart


def _f(value: float) -> str:
    return f"{value:.1f}"


def render_svg(analysis: Analysis, samples: Downsampler, bands: list[Band]) -> str:
    """The chart as a standalone SVG element (well-formed XML)."""
    settings = analysis.settings
    warning = float(settings["warning_mb"] or 0)
    critical = float(settings["critical_mb"] or 0)
    available_min = float(settings["system_available_min_mb"] or 0)
    time_range = samples.time_range
    if time_range is None:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} 60" class="chart">'
            '<text x="20" y="35">no memory lines to chart</text></svg>'
        )
    t_low, t_high = time_range
    if t_high - t_low < 60:
        t_low, t_high = t_low - 60, t_high + 60
    top_value = max(samples.maximum, critical * 1.05, warning * 1.05)
    step = nice_step(top_value, 6)
    y_high = math.ceil(top_value / step) * step
    x = Scale(t_low, t_high, LEFT, WIDTH - RIGHT)
    y = Scale(0.0, y_high, HEIGHT - BOTTOM, TOP)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'class="chart" role="img" aria-label="RSS, VMS and system available over time" '
        f'data-t-low="{t_low:.0f}" data-t-high="{t_high:.0f}">',
        f'<rect class="plot-area" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="#ffffff" stroke="#c8c8c8"/>',
    ]
    colours = _band_colours(bands)
    out.append('<g class="task-bands">')
    for band in bands:
        left, right = x(band.start), x(band.end)
        title = (
            f"{band.task}: {format_seconds(band.start)} → {format_seconds(band.end)[11:]}"
        )
        out.append(
            f'<rect class="task-band" data-task="{escape(band.task)}" x="{_f(left)}" '
            f'y="{TOP}" width="{_f(max(right - left, 1.0))}" height="{plot_h}" '
            f'fill="{colours[band.task]}" fill-opacity="0.22">'
            f"<title>{escape(title)}</title></rect>"
        )
    out.append("</g>")
    out.append('<g class="y-axis" font-size="12" fill="#444">')
    value = 0.0
    while value <= y_high + step / 1000:
        py = _f(y(value))
        out.append(
            f'<line class="tick" data-mb="{value:g}" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
            f'y1="{py}" y2="{py}" stroke="#ececec"/>'
            f'<text x="{LEFT - 8}" y="{_f(y(value) + 4)}" text-anchor="end">{value:,.0f}</text>'
        )
        value += step
    out.append(
        f'<text class="axis-title" transform="translate(18 {TOP + plot_h / 2:.0f}) rotate(-90)" '
        'text-anchor="middle">memory (MB)</text></g>'
    )
    ticks, fmt = _time_ticks(t_low, t_high)
    out.append('<g class="x-axis" font-size="12" fill="#444">')
    for tick in ticks:
        px = _f(x(tick))
        out.append(
            f'<line class="tick" x1="{px}" x2="{px}" y1="{HEIGHT - BOTTOM}" '
            f'y2="{HEIGHT - BOTTOM + 5}" stroke="#888"/>'
            f'<text x="{px}" y="{HEIGHT - BOTTOM + 19}" text-anchor="middle">'
            f"{escape(_label(tick, fmt))}</text>"
        )
    out.append(
        f'<text class="axis-title" x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 12}" '
        f'text-anchor="middle">time (log local time, {format_seconds(t_low)[:16]} → '
        f"{format_seconds(t_high)[:16]})</text></g>"
    )
    max_gap = float(settings["max_seconds_per_line"] or 0)
    out.append('<g class="series-lines" fill="none" stroke-width="1.6">')
    for index, name in enumerate(SERIES):
        colour = _SERIES_STYLE[name][1]
        for segment in samples.points(index, max_gap):
            points = " ".join(f"{_f(x(t))},{_f(y(v))}" for t, v in segment)
            out.append(
                f'<polyline class="series {name}" stroke="{colour}" points="{points}"/>'
            )
    out.append("</g>")
    # Thresholds come last so that their labels stay readable over the series.
    out.append('<g class="thresholds" font-size="12">')
    for name, level, colour, label in (
        ("warning", warning, "#e08a00", "RSS warning"),
        ("critical", critical, "#c62828", "RSS critical"),
        ("available-min", available_min, "#2e8b57", "available minimum"),
    ):
        py = _f(y(level))
        text = f"{label} {level:,.0f} MB"
        text_width = 7.0 * len(text)  # about 7 px per character at 12 px
        out.append(
            f'<rect class="label-bg" x="{_f(WIDTH - RIGHT - 8 - text_width)}" '
            f'y="{_f(y(level) - 17)}" width="{_f(text_width + 6)}" height="14" '
            'fill="#ffffff" fill-opacity="0.85"/>'
        )
        out.append(
            f'<line class="threshold {name}" data-mb="{level:g}" x1="{LEFT}" '
            f'x2="{WIDTH - RIGHT}" y1="{py}" y2="{py}" stroke="{colour}" '
            'stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text x="{WIDTH - RIGHT - 4}" y="{_f(y(level) - 4)}" text-anchor="end" '
            f'fill="{colour}">{text}</text>'
        )
    out.append("</g></svg>")
    return "\n".join(out)


def _band_colours(bands: list[Band]) -> dict[str, str]:
    colours: dict[str, str] = {}
    for band in bands:
        if band.task not in colours:
            colours[band.task] = _BAND_COLOURS[len(colours) % len(_BAND_COLOURS)]
    return colours


def _legend(bands: list[Band]) -> str:
    items = [
        f'<span class="key"><span class="swatch line" style="background:{colour}"></span>'
        f"{label}</span>"
        for label, colour in _SERIES_STYLE.values()
    ]
    items.append(
        '<span class="key"><span class="swatch dash" style="border-color:#e08a00"></span>'
        "warning / critical</span>"
    )
    for task, colour in _band_colours(bands).items():
        items.append(
            f'<span class="key"><span class="swatch band" style="background:{colour}"></span>'
            f"{escape(task)}</span>"
        )
    return '<div class="legend">' + "".join(items) + "</div>"


# --------------------------------------------------------------------------- the page

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 24px auto; max-width: 1240px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #666; margin: 0 0 16px; }
.chart { width: 100%; height: auto; display: block; font-family: inherit; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 6px 0 0 76px; color: #333; }
.key { display: inline-flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 18px; height: 10px; }
.swatch.line { height: 3px; }
.swatch.dash { height: 0; border-top: 2px dashed; }
.swatch.band { opacity: .45; }
table { border-collapse: collapse; margin: 4px 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
th { background: #f6f6f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { margin: 4px 0; color: #555; }
.verdict-growing { background: #fdecea; border-left: 4px solid #c62828; padding: 6px 10px; }
"""


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


def render_html(
    analysis: Analysis, samples: Downsampler, bands: list[Band], title: str = "Memory report"
) -> str:
    """The whole page."""
    generated = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    files = ", ".join(analysis.files[:5]) + (" …" if len(analysis.files) > 5 else "")
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{len(analysis.files)} file(s): {escape(files)} · '
        f"{analysis.first or '-'} → {analysis.last or '-'} · "
        f"{analysis.lines.selected:,} lines · generated {escape(generated)}</p>",
        render_svg(analysis, samples, bands),
        _legend(bands),
        *(_html_table(t) for t in analysis_tables(analysis)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
