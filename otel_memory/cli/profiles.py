"""``otel-memory profiles``: list the saved allocation profiles, or draw one as a flame graph.

    otel-memory profiles logs/                       # ID, task, start, top site, bytes
    otel-memory profiles logs/ --json
    otel-memory profiles logs/ --open 3 -o dump.html # ID: a listed number, a span id or a name

The files are the gzipped pprof profiles the monitor writes to ``{log_dir}/profiles/`` with
``deep_capture.profiles: pprof`` (or ``both``), read here with :mod:`otel_memory.base.pprof`. The
page is self-contained (no network): an icicle flame graph, the program at the top and each
allocating line at the bottom of its stack; widths are the bytes (or blocks) still alive at the
task's end. Click a frame to zoom in, the top bar to zoom out, hover for the numbers; type in
the search box to highlight the frames whose function or file matches.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import sys
import zlib
from dataclasses import dataclass
from datetime import datetime
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from otel_memory.base.pprof import PprofError, PprofProfile, decode, top_frames
from otel_memory.base.retention import PROFILE_NAME, PROFILES_DIR
from otel_memory.base.version import __version__
from otel_memory.cli.errors import InputError, UsageError, shown
from otel_memory.cli.output import write_output

MAX_NODES = 20_000
"""Most frames drawn; the smallest branches beyond it are merged into their parent."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``profiles`` sub-command."""
    parser = commands.add_parser(
        "profiles",
        help="list saved allocation profiles, or draw one as a flame graph",
        description="List the allocation profiles (pprof, .pb.gz) saved in LOG_DIR/profiles: "
        "task, start time, top allocating site and its bytes. With --open ID, write one as a "
        "self-contained HTML flame graph (click to zoom, hover for values).",
    )
    parser.add_argument("log_dir", metavar="LOG_DIR",
                        help="the monitor's log_dir (or its profiles folder)")
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.add_argument("--open", metavar="ID",
                        help="the profile to draw: its number in the list, its span id, or its "
                        "file name")
    parser.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="with --open: where to write the page, - for standard output "
                        "(default: the profile's name with .html)")
    parser.add_argument("--force", action="store_true",
                        help="replace the output file if it exists (never a directory, "
                        "device or FIFO)")
    parser.set_defaults(run=run)


@dataclass(frozen=True, slots=True)
class SavedProfile:
    """One profile file and what its content says."""

    number: int
    path: Path
    task: str
    time: str
    """When the task started (local time)."""
    span_id: str
    trace_id: str
    top_site: str
    top_bytes: int
    total_bytes: int
    profile: PprofProfile

    def row(self) -> dict[str, Any]:
        """The JSON form of a list entry."""
        return {
            "id": self.number, "file": str(self.path), "task": self.task, "started": self.time,
            "span_id": self.span_id, "trace_id": self.trace_id, "top_site": self.top_site,
            "top_bytes": self.top_bytes, "total_bytes": self.total_bytes,
        }


def _folder(log_dir: str) -> Path:
    path = Path(log_dir)
    if not path.is_dir():
        raise InputError(f"{shown(log_dir)}: not a directory")
    nested = path / PROFILES_DIR
    return nested if nested.is_dir() else path


def read_profile(path: Path) -> PprofProfile:
    """A gzipped (or plain) pprof file; :class:`InputError` naming it when it is not one."""
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return decode(data)
    except (OSError, EOFError, zlib.error, PprofError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise InputError(f"{shown(path)}: not a readable pprof profile ({reason})") from None


def _comment(profile: PprofProfile, key: str) -> str:
    prefix = f"{key}: "
    return next((c[len(prefix):] for c in profile.comments if c.startswith(prefix)), "")


def _site(frame: tuple[str, str, int]) -> str:
    name, filename, line = frame
    return f"{name} ({Path(filename).name}:{line})" if filename else name


def saved_profiles(log_dir: str) -> list[SavedProfile]:
    """The profiles of ``log_dir``, oldest first, numbered from 1 (unreadable files skipped
    with a warning on stderr)."""
    found = []
    for path in sorted(_folder(log_dir).glob("*.pb.gz")):
        try:
            profile = read_profile(path)
        except InputError as exc:
            print(f"otel-memory: skipped {exc}", file=sys.stderr)
            continue
        match = PROFILE_NAME.fullmatch(path.name)
        when = (
            datetime.fromtimestamp(profile.time_nanos / 1e9).strftime("%Y-%m-%d %H:%M:%S")
            if profile.time_nanos
            else ""
        )
        top = top_frames(profile)
        found.append(
            SavedProfile(
                number=0,
                path=path,
                task=_comment(profile, "task") or (match["task"] if match else path.name),
                time=when,
                span_id=_comment(profile, "span_id") or (match["span"] if match else ""),
                trace_id=_comment(profile, "trace_id"),
                top_site=_site(top[0][0]) if top else "",
                top_bytes=top[0][1] if top else 0,
                total_bytes=sum(values[0] for _, values in profile.samples if values),
                profile=profile,
            )
        )
    found.sort(key=lambda saved: (saved.time, saved.path.name))
    return [dataclasses.replace(saved, number=i) for i, saved in enumerate(found, 1)]


def _pick(profiles: list[SavedProfile], wanted: str) -> SavedProfile:
    for saved in profiles:
        if wanted in (str(saved.number), saved.span_id, saved.path.name, str(saved.path)):
            return saved
    if Path(wanted).is_file():
        raise UsageError(f"--open {shown(wanted)}: not one of the listed profiles")
    raise UsageError(
        f"--open {shown(wanted)}: no such profile (give a number 1-{len(profiles)}, a span id "
        "or a file name from the list)"
        if profiles
        else f"--open {shown(wanted)}: there are no profiles"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``profiles``."""
    profiles = saved_profiles(args.log_dir)
    if args.open is None:
        if args.output is not None or args.force:
            raise UsageError("-o and --force go with --open ID")
        _print_list(profiles, as_json=args.json)
        return 0
    saved = _pick(profiles, args.open)
    page = render_flame_graph(saved)
    output = args.output or saved.path.name.removesuffix(".pb.gz") + ".html"
    written = write_output(output, page, force=args.force)
    if written is not None:
        print(f"wrote {written} ({len(page.encode()) / 1024:,.0f} KiB)")
    return 0


def _mb(value: int) -> str:
    return f"{value / 1_048_576:,.1f} MB"


def _print_list(profiles: list[SavedProfile], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([saved.row() for saved in profiles], indent=2))
        return
    if not profiles:
        print("no allocation profiles")
        return
    rows = [("ID", "TASK", "STARTED", "TOP SITE", "BYTES")] + [
        (str(s.number), s.task, s.time, s.top_site, _mb(s.top_bytes)) for s in profiles
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(row[i].ljust(widths[i]) for i in range(4)) + "  " + row[4])


# --------------------------------------------------------------------------- the page


def flame_tree(profile: PprofProfile) -> dict[str, Any]:
    """The call tree, root first: ``{"strings": [...], "root": [name, file, line, bytes, blocks,
    children]}`` with names and files as indices into ``strings`` (most frames repeat)."""
    strings: dict[str, int] = {}

    def string(text: str) -> int:
        return strings.setdefault(text, len(strings))

    root: list[Any] = [string("all"), string(""), 0, 0, 0, {}]
    for stack, values in profile.samples:
        size = values[0] if values else 0
        count = values[1] if len(values) > 1 else 0
        node = root
        node[3] += size
        node[4] += count
        for name, filename, line in reversed(stack):  # pprof lists the leaf first
            key = (name, filename, line)
            child = node[5].get(key)
            if child is None:
                child = node[5][key] = [string(name), string(filename), line, 0, 0, {}]
            child[3] += size
            child[4] += count
            node = child

    budget = [MAX_NODES]

    def freeze(node: list[Any]) -> list[Any]:
        children = sorted(node[5].values(), key=lambda c: c[3], reverse=True)
        kept = []
        for child in children:
            if budget[0] <= 0:
                break  # the parent's width still counts the merged branches
            budget[0] -= 1
            kept.append(freeze(child))
        return [*node[:5], kept]

    return {"strings": list(strings), "root": freeze(root)}


def _script_json(value: object) -> str:
    """JSON that cannot end its ``<script>`` element early, whatever the names hold."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files("otel_memory.cli").joinpath("assets").joinpath(name).read_text("utf-8")


def render_flame_graph(saved: SavedProfile) -> str:
    """The whole page: header, controls, the flame graph's data and script, all inline."""
    profile = saved.profile
    title = f"Allocations of {saved.task}"
    data = {
        **flame_tree(profile),
        "types": [list(t) for t in profile.sample_types],
    }
    meta = (
        f"{escape(saved.time)} · span {escape(saved.span_id)} · trace {escape(saved.trace_id)} · "
        f"{_mb(saved.total_bytes)} alive at the task's end · top site "
        f"{escape(saved.top_site)} ({_mb(saved.top_bytes)}) · {escape(saved.path.name)}"
    )
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{meta}</p>',
        '<div class="toolbar"><label>Show <select id="kind"><option value="0">bytes</option>'
        '<option value="1">blocks</option></select></label>'
        '<input id="search" type="search" placeholder="highlight function or file" size="32">'
        '<button id="reset" type="button">Reset zoom</button>'
        '<span class="hint">click a frame to zoom in · the top bar zooms out</span></div>',
        '<div id="flame" role="img" aria-label="flame graph"></div>',
        '<div id="flame-tip" class="chart-tooltip" hidden></div>',
        f"<footer>otel-memory {escape(__version__)} · live allocations of one task run, traced "
        "with tracemalloc; widths are what was still allocated when the task ended.</footer>",
        f'<script type="application/json" id="flame-data">{_script_json(data)}</script>',
        f"<script>{_asset('flame.js')}</script>",
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        f"<style>{_asset('report.css')}{_asset('flame.css')}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    return page.encode("utf-8", "replace").decode("utf-8")
