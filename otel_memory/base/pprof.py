"""pprof's ``profile.proto``, written and read with a small protobuf wire codec.

    data = encode(PprofProfile(
        sample_types=(("space", "bytes"), ("objects", "count")),
        samples=((((("alloc", "app.py", 12), ("main", "app.py", 30))), (1024, 8)),),
        time_nanos=time.time_ns(), comments=("task: Nightly Dump",)))
    Path("task.pb.gz").write_bytes(gzip.compress(data))
    profile = decode(gzip.decompress(Path("task.pb.gz").read_bytes()))

Why no protobuf library: the CLI reads these files and imports only this layer (no
``google.protobuf``, whose generated modules would have to match the installed runtime), and
pprof's format needs three wire types (varint, length-delimited, packed varints). Both sides
stay in this one module so that what is written is what is read.

A stack is a tuple of frames ``(function, file, line)``, the allocating frame first, as
pprof's ``Sample.location_id`` wants it. Functions, locations and strings are deduplicated
(string 0 is ``""`` as the format requires); each location has one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Frame = tuple[str, str, int]
"""``(function, file, line)``."""

Stack = tuple[Frame, ...]
"""Frames, the innermost (allocating) first."""

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass(frozen=True, slots=True)
class PprofProfile:
    """What a pprof profile says, in the terms this package uses.

    Args:
        sample_types: ``(type, unit)`` per value of each sample.
        samples: ``(stack, values)``; ``values`` has one entry per sample type.
        default_sample_type: the type ``pprof`` shows unless told otherwise ("" = the last).
        time_nanos: when the profile was taken (Unix ns).
        duration_nanos: how long it covers.
        comments: free-form lines (``go tool pprof -comments`` prints them).
        labels: string labels put on every sample (e.g. ``span_id``).
        binary: the name of the one mapping every location belongs to (pprof wants a "main
            binary"; its flags say functions, files and lines are all known).
    """

    sample_types: tuple[tuple[str, str], ...]
    samples: tuple[tuple[Stack, tuple[int, ...]], ...]
    default_sample_type: str = ""
    time_nanos: int = 0
    duration_nanos: int = 0
    comments: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = field(default=())
    binary: str = "python"


class PprofError(ValueError):
    """The bytes are not a pprof profile this module can read."""


# ---------------------------------------------------------------------------------- writing


def _varint(value: int, out: bytearray) -> None:
    value &= (1 << 64) - 1  # negative int64 values take ten bytes, as protobuf writes them
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _key(number: int, wire: int, out: bytearray) -> None:
    _varint(number << 3 | wire, out)


def _int_field(number: int, value: int, out: bytearray) -> None:
    if value:
        _key(number, _VARINT, out)
        _varint(value, out)


def _bytes_field(number: int, payload: bytes | bytearray, out: bytearray) -> None:
    _key(number, _LEN, out)
    _varint(len(payload), out)
    out += payload


def _packed(number: int, values: Iterable[int], out: bytearray) -> None:
    payload = bytearray()
    for value in values:
        _varint(value, payload)
    if payload:
        _bytes_field(number, payload, out)


class _Strings:
    """The string table: index 0 is ``""``; each string once."""

    def __init__(self) -> None:
        self.table: list[str] = [""]
        self._index: dict[str, int] = {"": 0}

    def __call__(self, text: str) -> int:
        index = self._index.get(text)
        if index is None:
            index = self._index[text] = len(self.table)
            self.table.append(text)
        return index


def _mapping(filename: int) -> bytearray:
    """Mapping 1: the binary, with functions, files and lines all known."""
    mapping = bytearray()
    _int_field(1, 1, mapping)
    _int_field(5, filename, mapping)
    for flag in (7, 8, 9):  # has_functions, has_filenames, has_line_numbers
        _int_field(flag, 1, mapping)
    return mapping


def encode(profile: PprofProfile) -> bytes:
    """The profile as ``profile.proto`` bytes (not compressed)."""
    strings = _Strings()
    out = bytearray()
    for kind, unit in profile.sample_types:
        value_type = bytearray()
        _int_field(1, strings(kind), value_type)
        _int_field(2, strings(unit), value_type)
        _bytes_field(1, value_type, out)
    labels = bytearray()
    for key, value in profile.labels:
        label = bytearray()
        _int_field(1, strings(key), label)
        _int_field(2, strings(value), label)
        _bytes_field(3, label, labels)
    functions: dict[tuple[str, str], int] = {}
    locations: dict[Frame, int] = {}
    for stack, values in profile.samples:
        ids = []
        for frame in stack:
            location = locations.get(frame)
            if location is None:
                functions.setdefault((frame[0], frame[1]), len(functions) + 1)
                location = locations[frame] = len(locations) + 1
            ids.append(location)
        sample = bytearray()
        _packed(1, ids, sample)
        _packed(2, values, sample)
        sample += labels
        _bytes_field(2, sample, out)
    if locations:
        _bytes_field(3, _mapping(strings(profile.binary)), out)
    for (name, filename, line), location in locations.items():
        line_message = bytearray()
        _int_field(1, functions[(name, filename)], line_message)
        _int_field(2, line, line_message)
        message = bytearray()
        _int_field(1, location, message)
        _int_field(2, 1, message)
        _bytes_field(4, line_message, message)
        _bytes_field(4, message, out)
    for (name, filename), function in functions.items():
        message = bytearray()
        _int_field(1, function, message)
        _int_field(2, strings(name), message)
        _int_field(3, strings(name), message)
        _int_field(4, strings(filename), message)
        _bytes_field(5, message, out)
    comments = [strings(comment) for comment in profile.comments]
    default = strings(profile.default_sample_type) if profile.default_sample_type else 0
    for text in strings.table:  # every string is interned by now
        _bytes_field(6, text.encode("utf-8", "surrogateescape"), out)
    _int_field(9, profile.time_nanos, out)
    _int_field(10, profile.duration_nanos, out)
    _packed(13, comments, out)
    _int_field(14, default, out)
    return bytes(out)


# ---------------------------------------------------------------------------------- reading


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise PprofError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes | memoryview) -> Iterable[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)``; length-delimited values are memoryviews."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(view, pos)
            yield number, wire, value
        elif wire == _LEN:
            length, pos = _read_varint(view, pos)
            if pos + length > len(view):
                raise PprofError("length-delimited field runs past the end")
            yield number, wire, view[pos : pos + length]
            pos += length
        elif wire in (_I64, _I32):
            pos += 8 if wire == _I64 else 4
            if pos > len(view):
                raise PprofError("fixed-size field runs past the end")
        else:
            raise PprofError(f"unsupported wire type {wire}")


def _ints(wire: int, value: int | memoryview) -> list[int]:
    """A repeated integer field's values: packed or one at a time."""
    if isinstance(value, int):
        return [value]
    ints = []
    pos = 0
    while pos < len(value):
        item, pos = _read_varint(value, pos)
        ints.append(item)
    return ints


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _message(value: int | memoryview) -> memoryview:
    if isinstance(value, int):
        raise PprofError("expected a message, found a number")
    return value


def _scalars(data: memoryview) -> dict[int, int]:
    """The varint fields of a small message (the last one wins)."""
    return {number: value for number, _, value in _fields(data) if isinstance(value, int)}


def _read_sample(message: memoryview) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """A sample's location ids, values and string labels (key, value string indices)."""
    ids: list[int] = []
    values: list[int] = []
    labels: list[tuple[int, int]] = []
    for number, wire, item in _fields(message):
        if number == 1:
            ids += _ints(wire, item)
        elif number == 2:
            values += [_signed(value) for value in _ints(wire, item)]
        elif number == 3:
            label = _scalars(_message(item))
            labels.append((label.get(1, 0), label.get(2, 0)))
    return ids, values, labels


def _read_location(message: memoryview) -> tuple[int, list[tuple[int, int]]]:
    """A location's id and its lines (function id, line)."""
    location_id, lines = 0, []
    for number, _, item in _fields(message):
        if number == 1 and isinstance(item, int):
            location_id = item
        elif number == 4:
            line = _scalars(_message(item))
            lines.append((line.get(1, 0), line.get(2, 0)))
    return location_id, lines


@dataclass(slots=True)
class _Raw:
    """The top-level fields as indices, before strings are looked up."""

    strings: list[str] = field(default_factory=list)
    types: list[tuple[int, int]] = field(default_factory=list)
    samples: list[tuple[list[int], list[int], list[tuple[int, int]]]] = field(default_factory=list)
    locations: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    functions: dict[int, tuple[int, int]] = field(default_factory=dict)
    comments: list[int] = field(default_factory=list)
    scalars: dict[int, int] = field(default_factory=dict)
    binary: int = 0

    def text(self, index: int) -> str:
        if not 0 <= index < len(self.strings):
            raise PprofError(f"string index {index} outside the table of {len(self.strings)}")
        return self.strings[index]

    def frames(self, location_id: int) -> list[Frame]:
        # A location with inlined lines lists the innermost first, as a stack does.
        found = []
        for function_id, line in self.locations.get(location_id, []):
            name, filename = self.functions.get(function_id, (0, 0))
            found.append((self.text(name), self.text(filename), line))
        return found or [(f"0x{location_id:x}", "", 0)]


def _read(data: bytes) -> _Raw:
    raw = _Raw()
    for number, wire, value in _fields(data):
        if number == 1:
            fields = _scalars(_message(value))
            raw.types.append((fields.get(1, 0), fields.get(2, 0)))
        elif number == 2:
            raw.samples.append(_read_sample(_message(value)))
        elif number == 4:
            location_id, lines = _read_location(_message(value))
            raw.locations[location_id] = lines
        elif number == 5:
            fields = _scalars(_message(value))
            raw.functions[fields.get(1, 0)] = (fields.get(2, 0), fields.get(4, 0))
        elif number == 6:
            raw.strings.append(bytes(_message(value)).decode("utf-8", "replace"))
        elif number == 3:
            raw.binary = _scalars(_message(value)).get(5, 0)
        elif number == 13:
            raw.comments += _ints(wire, value)
        elif isinstance(value, int):
            raw.scalars[number] = value
    return raw


def decode(data: bytes) -> PprofProfile:
    """Read ``profile.proto`` bytes (not compressed); raises :class:`PprofError`."""
    raw = _read(data)
    samples = []
    for ids, values, _ in raw.samples:
        stack: list[Frame] = []
        for location_id in ids:
            stack += raw.frames(location_id)
        samples.append((tuple(stack), tuple(values)))
    labels = {(raw.text(k), raw.text(v)) for _, _, pairs in raw.samples for k, v in pairs}
    return PprofProfile(
        sample_types=tuple((raw.text(kind), raw.text(unit)) for kind, unit in raw.types),
        samples=tuple(samples),
        default_sample_type=raw.text(raw.scalars.get(14, 0)),
        time_nanos=_signed(raw.scalars.get(9, 0)),
        duration_nanos=_signed(raw.scalars.get(10, 0)),
        comments=tuple(raw.text(index) for index in raw.comments),
        labels=tuple(sorted(labels)),
        binary=raw.text(raw.binary),
    )


def top_frames(profile: PprofProfile, index: int = 0) -> Sequence[tuple[Frame, int]]:
    """Value ``index`` summed per allocating frame (a stack's first), largest first."""
    totals: dict[Frame, int] = {}
    for stack, values in profile.samples:
        if stack and index < len(values):
            totals[stack[0]] = totals.get(stack[0], 0) + values[index]
    return sorted(totals.items(), key=lambda row: row[1], reverse=True)
