"""Property tests: no input crashes the line parser or the analyzer, and they agree."""

from __future__ import annotations

import string
from datetime import datetime

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from otel_memory.base.logline import LINE_PATTERN, Marker, format_line, parse_line, sanitize_name
from otel_memory.cli.pipeline import Analyzer
from otel_memory.kernel.readings import MB, MemoryReading

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Lines shaped like the format (including impossible dates, odd digits and odd names) reach
# deep into the parser; free text covers everything else.
shaped_lines = st.from_regex(LINE_PATTERN, fullmatch=True)
any_lines = st.one_of(
    shaped_lines,
    st.text(max_size=200),
    st.text(alphabet=string.digits + " -:.|[]>-<%()MBRSVAfre", max_size=160),
)


@FAST
@given(any_lines)
@example("2025-02-29 00:00:00 --- [Idle] | RSS: 1.0 MB | VMS: 1.0 MB | System Available: 1.0 MB (1.0% free)")
@example("2025-11-16 24:00:00 --- [Idle] | RSS: 1.0 MB | VMS: 1.0 MB | System Available: 1.0 MB (1.0% free)")
@example("2025-11-16 23:59:60 --- [Idle] | RSS: 1.0 MB | VMS: 1.0 MB | System Available: 1.0 MB (1.0% free)")
# Arabic-Indic digits are \d to the regex: both readers must treat them alike.
@example("\u0662\u0660\u0662\u0665-11-16 08:30:00 --- [Idle] | RSS: \u0661.\u0660 MB | VMS: 1.0 MB | System Available: 1.0 MB (1.0% free)")
def test_analyzer_accepts_exactly_what_parse_line_accepts(text):
    lines = [part + "\n" for part in text.replace("\r", "\n").split("\n")]
    analyzer = Analyzer()
    analyzer.begin_file("fuzz.log", "fuzz")
    analyzer.feed(1, lines)  # never raises
    analysis = analyzer.finish(["fuzz.log"])
    parsed = [parse_line(x) for x in lines]
    accepted = [p for p in parsed if p is not None]
    assert analysis.lines.parsed == len(accepted)
    assert analysis.lines.malformed + analysis.lines.blank + len(accepted) == len(lines)
    if accepted:
        assert analysis.peaks[0].rss_mb == max(p.rss_mb for p in accepted)
        first = min(p.timestamp for p in accepted).strftime("%Y-%m-%d %H:%M:%S")
        assert analysis.first == first


names = st.text(max_size=40)
megabytes = st.floats(min_value=0, max_value=2_000_000, allow_nan=False)


@FAST
@given(
    marker=st.sampled_from(list(Marker)),
    name=names,
    rss=megabytes,
    vms=megabytes,
    available=megabytes,
    total_extra=st.floats(min_value=0, max_value=1_000_000),
    timestamp=st.floats(min_value=0, max_value=4_000_000_000),
)
def test_format_line_parses_back(marker, name, rss, vms, available, total_extra, timestamp):
    reading = MemoryReading(
        timestamp=timestamp,
        rss=round(rss * MB),
        vms=round(vms * MB),
        system_available=round(available * MB),
        system_total=round((available + total_extra) * MB) or 1,
    )
    text = format_line(marker, name, reading)
    parsed = parse_line(text)
    assert parsed is not None, text
    assert parsed.marker is marker
    assert parsed.name == sanitize_name(name)
    assert abs(parsed.rss_mb - reading.rss / MB) <= 0.05 + 1e-9
    assert abs(parsed.vms_mb - reading.vms / MB) <= 0.05 + 1e-9
    assert abs(parsed.available_mb - reading.system_available / MB) <= 0.05 + 1e-9
    assert abs(parsed.free_percent - reading.free_ratio * 100) <= 0.05 + 1e-9
    assert parsed.timestamp == datetime.fromtimestamp(int(timestamp))
    # The analyzer reads the same line the same way.
    analyzer = Analyzer()
    analyzer.begin_file("x.log", "x")
    analyzer.feed(1, [text + "\n"])
    analysis = analyzer.finish(["x.log"])
    assert analysis.lines.parsed == 1
    assert analysis.peaks[0].rss_mb == parsed.rss_mb
    assert analysis.first == parsed.timestamp.strftime("%Y-%m-%d %H:%M:%S")


@FAST
@given(st.binary(max_size=300))
def test_parse_line_never_raises_on_decoded_bytes(data):
    parse_line(data.decode("utf-8", errors="replace"))
