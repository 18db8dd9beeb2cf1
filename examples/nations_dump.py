"""The main job: download a nations XML dump and load it into SQLite, with memory on every task.

    python examples/nations_dump.py                       # 325,000 nations, both variants
    python examples/nations_dump.py --nations 2000 --variant streaming --log-dir /tmp/logs
    opentelemetry-instrument python examples/nations_dump.py   # spans/metrics/logs over OTLP

It mirrors the bot of the memory-monitor guide: "Nations Dump Download" fetches a gzip-compressed
XML dump over HTTP (here a synthetic one, generated once and cached, served from 127.0.0.1) and
"Nations Dump Processing" parses it and inserts every nation into a database. Processing runs in
two variants so the task spans show what streaming saves:

* ``streaming``: ``iterparse`` + ``elem.clear()`` and batched ``executemany``;
* ``load-all``: the whole document decompressed, parsed with ``ElementTree`` and turned into one
  list of rows before inserting, as code that "just works" on small inputs tends to do.

The monitor writes ``{log_dir}/memory_YYYYMMDD.log`` with a ``---`` line every second; at the end
the script prints each variant's RSS delta and peak, read from the finished spans.
"""

from __future__ import annotations

import argparse
import functools
import gc
import gzip
import http.server
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path

from _embedded import configure_embedded_default
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_memory
from otel_memory import clear_active_task, set_active_task, traced_task
from otel_memory.api import current_config
from otel_memory.base.config import config_from_dict

MB = 1024 * 1024
DUMP_FORMAT_VERSION = 2  # bump when the generator changes, so cached dumps are rebuilt
VARIANTS = ("streaming", "load-all")
# Small batches keep the transient rows small; at 5000 rows glibc kept ~20 MB of freed heap.
BATCH_SIZE = 1000
CHUNK_SIZE = 1024 * 1024

# --------------------------------------------------------------------------- the synthetic dump

# fmt: off
_SYLLABLES = (
    "ar", "bel", "cor", "dun", "el", "fen", "gar", "hol", "is", "jor", "kel", "lun", "mar", "nor",
    "os", "pel", "quin", "ros", "sel", "tar", "ul", "ven", "wes", "xan", "yor", "zel", "ath", "bri",
    "cra", "dro", "eth", "fla", "gor", "hul", "ith", "kra",
)
_TYPES = (
    "Republic", "Kingdom", "Empire", "Federation", "Commonwealth", "Principality", "Dominion",
    "Theocracy", "Confederacy", "Democratic Republic", "Free Land", "Holy Empire",
    "Most Serene Republic", "Allied States", "United Kingdom",
)
_CATEGORIES = (
    "Inoffensive Centrist Democracy", "Left-Leaning College State", "Capitalizt",
    "Civil Rights Lovefest", "Corporate Police State", "Democratic Socialists",
    "Iron Fist Consumerists", "Liberal Democratic Socialists", "Mother Knows Best State",
    "New York Times Democracy", "Psychotic Dictatorship", "Scandinavian Liberal Paradise",
)
_WORDS = (
    "unity", "strength", "freedom", "peace", "honor", "liberty", "progress", "order", "justice",
    "faith", "labor", "glory", "truth", "prosperity", "wisdom", "courage", "the", "of", "and",
    "for", "in", "our", "through", "by", "all", "land", "people", "sea", "sky", "mountain", "river",
    "forever", "always", "never", "stand", "together", "one", "many", "above", "below", "light",
)
_INDUSTRIES = (
    "Basket Weaving", "Arms Manufacturing", "Information Technology", "Furniture Restoration",
    "Book Publishing", "Gambling", "Trout Farming", "Woodchip Exports", "Beef-Based Agriculture",
    "Automobile Manufacturing", "Uranium Mining", "Pizza Delivery", "Insurance", "Retail",
)
_PRIORITIES = ("Defence", "Education", "Healthcare", "Law & Order", "Social Welfare", "Commerce")
_FREEDOM = ("Outlawed", "Rare", "Few", "Some", "Average", "Good", "Very Good", "Excellent")
_ANIMALS = ("fox", "eagle", "bear", "wolf", "lion", "owl", "stag", "horse", "otter", "swan")
_CURRENCIES = ("dollar", "pound", "mark", "crown", "florin", "credit", "shell", "ducat", "peso")
_RELIGIONS = ("Zen", "Stoicism", "Pantheism", "Faith", "Covenant", "Order", "Path", "Way")
_INFLUENCE = ("Zero", "Minnow", "Page", "Squire", "Apprentice", "Vassal", "Truckler")
_FLAGS = "https://www.nationstates.net/images/flags/uploads/"
_FEEDERS = (
    "The North Pacific", "The Pacific", "The South Pacific", "The East Pacific",
    "The West Pacific", "The Rejected Realms", "Lazarus", "Osiris", "Balder",
)
# fmt: on


def _syllable_name(index: int) -> str:
    """A unique pronounceable name: ``index`` written in syllables (base len(_SYLLABLES))."""
    parts = []
    index += 1500  # start at three syllables
    while index:
        index, digit = divmod(index, len(_SYLLABLES))
        parts.append(_SYLLABLES[digit])
    return "".join(parts).capitalize()


def _region_pool(rng: random.Random) -> list[str]:
    """Regions weighted like the real game: most nations sit in a handful of feeder regions."""
    suffixes = ("Isles", "Union", "Coast", "")
    others = [f"{_syllable_name(i * 7 + 3)} {rng.choice(suffixes)}".strip() for i in range(2000)]
    return [*_FEEDERS * 600, *others]


def _motto(rng: random.Random) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randint(2, 7))).capitalize()


def _nation_xml(index: int, rng: random.Random, regions: list[str], now: int) -> str:
    """One ``<NATION>`` record with the fields the real dump carries most often."""
    name = _syllable_name(index)
    kind = rng.choice(_TYPES)
    first_login = now - rng.randint(86_400, 20 * 365 * 86_400)
    civil, economy, political = (rng.choice(_FREEDOM) for _ in range(3))
    endorsers = (rng.randrange(index + 1) for _ in range(rng.choice((0, 0, 0, 1, 3))))
    endorsements = ",".join(_syllable_name(i).lower() for i in endorsers)
    return (
        f"<NATION><NAME>{name}</NAME><TYPE>{kind}</TYPE>"
        f"<FULLNAME>The {kind} of {name}</FULLNAME><MOTTO>{_motto(rng)}</MOTTO>"
        f"<CATEGORY>{rng.choice(_CATEGORIES)}</CATEGORY>"
        f"<UNSTATUS>{'WA Member' if rng.random() < 0.1 else 'Non-member'}</UNSTATUS>"
        f"<ENDORSEMENTS>{endorsements}</ENDORSEMENTS>"
        f"<ISSUES_ANSWERED>{rng.randint(0, 2500)}</ISSUES_ANSWERED>"
        f"<FREEDOM><CIVILRIGHTS>{civil}</CIVILRIGHTS><ECONOMY>{economy}</ECONOMY>"
        f"<POLITICALFREEDOM>{political}</POLITICALFREEDOM></FREEDOM>"
        f"<REGION>{rng.choice(regions)}</REGION><POPULATION>{rng.randint(5, 40_000)}</POPULATION>"
        f"<TAX>{rng.uniform(0, 80):.1f}</TAX><ANIMAL>{rng.choice(_ANIMALS)}</ANIMAL>"
        f"<CURRENCY>{rng.choice(_CURRENCIES)}</CURRENCY><DEMONYM>{name}ian</DEMONYM>"
        f"<FLAG>{_FLAGS}{name.lower()}__{rng.randrange(10**6)}.png</FLAG>"
        f"<MAJORINDUSTRY>{rng.choice(_INDUSTRIES)}</MAJORINDUSTRY>"
        f"<GOVTPRIORITY>{rng.choice(_PRIORITIES).replace('&', '&amp;')}</GOVTPRIORITY>"
        f"<FIRSTLOGIN>{first_login}</FIRSTLOGIN>"
        f"<LASTLOGIN>{rng.randint(first_login, now)}</LASTLOGIN>"
        f"<INFLUENCE>{rng.choice(_INFLUENCE)}</INFLUENCE>"
        f"<LEADER>{_syllable_name(rng.randrange(10**5)).capitalize()}</LEADER>"
        f"<CAPITAL>{_syllable_name(rng.randrange(10**5))} City</CAPITAL>"
        f"<RELIGION>{rng.choice(_RELIGIONS)}</RELIGION></NATION>\n"
    )


def ensure_dump(nations: int, cache_dir: Path) -> Path:
    """The gzip-compressed dump of ``nations`` records, generated once into ``cache_dir``."""
    path = cache_dir / f"nations_{nations}_v{DUMP_FORMAT_VERSION}.xml.gz"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rng = random.Random(nations)  # same size, same dump
    regions = _region_pool(rng)
    now = 1_763_281_800
    partial = path.with_suffix(f".{os.getpid()}.part")
    with gzip.open(partial, "wt", encoding="utf-8", compresslevel=6) as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n<NATIONS api_version="12">\n')
        for start in range(0, nations, 1000):
            stop = min(start + 1000, nations)
            out.write("".join(_nation_xml(i, rng, regions, now) for i in range(start, stop)))
        out.write("</NATIONS>\n")
    partial.replace(path)  # atomic: a concurrent or interrupted run never sees half a dump
    print(
        f"generated {nations:,} nations: {path} ({path.stat().st_size / MB:.1f} MB) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return path


# --------------------------------------------------------------------------- download


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class DumpServer:
    """Serves one directory on 127.0.0.1 at an ephemeral port, from a daemon thread."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dump-server", daemon=True
        )

    def url(self, file_name: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{file_name}"

    def __enter__(self) -> DumpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@traced_task("Nations Dump Download")
def download(url: str, destination: Path) -> int:
    """Fetch ``url`` to ``destination`` in 1 MB chunks; returns the bytes written."""
    written = 0
    with urllib.request.urlopen(url, timeout=30) as response, destination.open("wb") as out:
        while chunk := response.read(CHUNK_SIZE):
            out.write(chunk)
            written += len(chunk)
    return written


# --------------------------------------------------------------------------- processing

# fmt: off
COLUMNS = (
    "NAME", "TYPE", "FULLNAME", "MOTTO", "CATEGORY", "UNSTATUS", "ENDORSEMENTS",
    "ISSUES_ANSWERED", "REGION", "POPULATION", "TAX", "ANIMAL", "CURRENCY", "DEMONYM", "FLAG",
    "MAJORINDUSTRY", "GOVTPRIORITY", "FIRSTLOGIN", "LASTLOGIN", "INFLUENCE", "LEADER", "CAPITAL",
    "RELIGION", "CIVILRIGHTS", "ECONOMY", "POLITICALFREEDOM",
)
# fmt: on
_INSERT = (
    f"INSERT OR REPLACE INTO nations ({', '.join(c.lower() for c in COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)

Row = tuple[str | None, ...]


def nation_row(nation: ET.Element) -> Row:
    """The database row of one ``<NATION>`` element (FREEDOM's children are flattened)."""
    fields = {child.tag: child.text for child in nation}
    freedom = nation.find("FREEDOM")
    if freedom is not None:
        fields.update((child.tag, child.text) for child in freedom)
    return tuple(fields.get(column) for column in COLUMNS)


def open_database(path: Path) -> sqlite3.Connection:
    """A fresh SQLite database with the ``nations`` table."""
    connection = sqlite3.connect(path)
    columns = ", ".join(
        f"{c.lower()} TEXT PRIMARY KEY" if c == "NAME" else f"{c.lower()}" for c in COLUMNS
    )
    connection.execute(f"CREATE TABLE IF NOT EXISTS nations ({columns})")
    return connection


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stream_rows(dump: Path) -> Iterator[Row]:
    """Rows one at a time; every finished element is cleared so the tree never grows."""
    with gzip.open(dump, "rb") as source:
        root: ET.Element | None = None
        for event, elem in ET.iterparse(source, events=("start", "end")):
            if root is None:
                root = elem
            elif event == "end" and elem.tag == "NATION":
                yield nation_row(elem)
                elem.clear()
                root.clear()  # the root would otherwise keep every (empty) NATION


def process_streaming(dump: Path, connection: sqlite3.Connection) -> int:
    """Parse incrementally and insert in batches; memory stays flat whatever the dump size."""
    inserted = 0
    for batch in _batches(_stream_rows(dump), BATCH_SIZE):
        connection.executemany(_INSERT, batch)
        connection.commit()
        inserted += len(batch)
    return inserted


def process_load_all(dump: Path, connection: sqlite3.Connection) -> int:
    """Decompress everything, parse the whole tree, build every row, then insert at once."""
    document = gzip.decompress(dump.read_bytes())
    root = ET.fromstring(document)
    rows = [nation_row(nation) for nation in root.iter("NATION")]
    connection.executemany(_INSERT, rows)
    connection.commit()
    return len(rows)


PROCESSORS = {"streaming": process_streaming, "load-all": process_load_all}


def run_variant(variant: str, url: str, work_dir: Path) -> int:
    """One full job, as the bot runs it: download, then process; the legacy API wraps both."""
    set_active_task(f"Nations Dump ({variant})")
    try:
        dump = work_dir / f"{variant}.xml.gz"
        size = download(url, dump)
        with traced_task("Nations Dump Processing"):
            with open_database(work_dir / f"{variant}.sqlite3") as connection:
                inserted = PROCESSORS[variant](dump, connection)
            connection.close()
        dump.unlink()
        clear_active_task("Nations Dump Complete")
    except Exception:
        clear_active_task("Nations Dump Error")
        raise
    print(f"{variant}: downloaded {size / MB:.1f} MB, inserted {inserted:,} nations")
    return inserted


# --------------------------------------------------------------------------- summary


def collect_spans() -> InMemorySpanExporter | None:
    """Keep finished spans for the summary, whoever configured the SDK provider."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return None
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def _mb(span: ReadableSpan, key: str) -> float:
    return float((span.attributes or {}).get(key, 0)) / MB  # type: ignore[arg-type]


def print_summary(spans: Iterable[ReadableSpan], log_dir: Path) -> None:
    """Per variant and task: duration and RSS start, delta, peak and peak above start."""
    spans = list(spans)
    parents = {span.context.span_id: span.name for span in spans if span.context}
    print("\nRSS per task (MB, from the task spans)")
    print(
        f"{'variant':<10} {'task':<24} {'time s':>7} {'start':>8} {'delta':>8} {'peak':>8} "
        f"{'peak-start':>10}"
    )
    for span in spans:
        if span.parent is None or not span.name.startswith("Nations Dump "):
            continue
        parent = parents.get(span.parent.span_id, "")
        variant = parent.removeprefix("Nations Dump (").removesuffix(")")
        start, peak = _mb(span, "memory.rss.start"), _mb(span, "memory.rss.peak")
        seconds = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
        print(
            f"{variant:<10} {span.name:<24} {seconds:7.1f} {start:8.1f} "
            f"{_mb(span, 'memory.rss.delta'):+8.1f} {peak:8.1f} {peak - start:+10.1f}"
        )
    logs = sorted(log_dir.glob("memory_*.log"))
    if not logs:
        print(f"\nno daily log in {log_dir}")
        return
    lines = logs[-1].read_text(encoding="utf-8").splitlines()
    print(f"\ndaily log: {logs[-1]} ({len(lines)} lines), last lines:")
    for line in lines[-6:]:
        print("  " + line)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--nations", type=int, default=100_000, help="records in the dump (the real one: 325,000+)"
    )
    parser.add_argument("--variant", choices=[*VARIANTS, "both"], default="both")
    parser.add_argument("--log-dir", default="logs", help="directory of the daily memory log")
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(tempfile.gettempdir(), "otel-memory-examples"),
        help="where the generated dump is kept between runs",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between --- lines")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_embedded_default()
    exporter = collect_spans()
    dump = ensure_dump(args.nations, Path(args.cache_dir))
    variants = VARIANTS if args.variant == "both" else (args.variant,)
    monitor = {"log_dir": args.log_dir, "interval_seconds": args.interval}
    config = config_from_dict({"general": {"monitoring": {"memory_monitor": monitor}}})
    started = time.perf_counter()
    otel_memory.start(config)
    # Under opentelemetry-instrument the monitor already runs with OTEL_PYTHON_MEMORY_* settings.
    running = current_config() or config
    if running.monitor.log_dir != args.log_dir:
        print(f"monitor already running: daily log in {running.monitor.log_dir!r}, not --log-dir")
    try:
        work_dir = Path(tempfile.mkdtemp(prefix="nations-dump-"))
        try:
            with DumpServer(dump.parent) as server:
                for variant in variants:
                    run_variant(variant, server.url(dump.name), work_dir)
                    gc.collect()  # let the next variant start from a settled heap
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
    finally:
        otel_memory.stop()
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    if exporter is not None:
        print_summary(exporter.get_finished_spans(), Path(running.monitor.log_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
