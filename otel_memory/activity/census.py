"""The heap census: objects tracked by the garbage collector, grouped by class.

    from otel_memory.activity.census import take_census

    census = take_census()
    census.counts["dict"], census.sizes["dict"]      # exact count and shallow bytes
    for row in census.top(10):                       # top 10 by count and by size, plus "other"
        print(row.name, row.count, row.size)

Sizes are ``sys.getsizeof`` summed exactly. Class names are bare for builtins (``dict``) and
``module.QualName`` otherwise. The census never calls ``gc.collect()`` and keeps no object alive
after it returns.

Two passes give the same result. The compiled one (``activity/_census.c``, built at install
when a C compiler works; :data:`ACCELERATED` says whether it is there) is the default; the
pure-Python one runs without it, or with ``take_census(accelerated=False)``. Both take
``gc.get_objects()``, tally and drop its exact tuples before the GIL is first released (a tuple
another thread is still building must not be held then: gh-59313, see :func:`_tally`), then size
the rest in chunks with a ``time.sleep(0)`` between them so other threads get the GIL. Both
size a type with :func:`_plan`: a type whose instances all have one size (no ``__itemsize__``,
``object.__sizeof__``) costs one ``sys.getsizeof`` per census; other types call their own C
``__sizeof__`` unbound, then add the per-type GC header that ``sys.getsizeof`` adds (measured on
one instance); type objects and Python-level ``__sizeof__`` go through ``sys.getsizeof``, and an
object whose ``__sizeof__`` fails counts 0 bytes, as in ``_safe_getsizeof``.

Where the time goes (1.3M objects, ``benchmarks/census.py``): ``gc.get_objects()`` ~9 ns per
object. The compiled pass reads each object's type once more to drop the tuples (~5 ns, a cache
miss: the longest stall another thread sees is ~1.7x ``gc.get_objects()`` alone), then tallies
in C with one ``__sizeof__`` call per variable-size object: about 0.2x ``objgraph.typestats()``
in all. It calls ``gc.get_objects`` itself, so no bytecode (and no thread switch) runs between
the snapshot and the tuple pass. The pure-Python pass partitions the snapshot by type in C
(``map`` of ``list.append`` over per-type buckets, ~45 ns per object) before it can drop the
tuples: about 0.5x ``objgraph.typestats()``, a stall ~6x ``gc.get_objects()``, and a thread
switch right at ``gc.get_objects()``'s return can still expose a tuple being built.
"""

from __future__ import annotations

import functools
import gc
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from types import MappingProxyType
from typing import Any

from otel_memory.base.errors import OtelMemoryError

try:
    from otel_memory.activity import _census
except ImportError:  # built without a C compiler: the pure-Python pass does the same work
    _census = None  # type: ignore[assignment]

ACCELERATED = _census is not None
"""Whether the compiled census pass is installed; :func:`take_census` then uses it by default."""

OTHER = "other"
"""The class name under which :meth:`HeapCensus.top` folds every class outside the top N."""

DEFAULT_CHUNK_SIZE = 10_000
"""Objects handled between two GIL releases (about 1 ms of work on a 2020s laptop core)."""

_Plan = tuple[Callable[[Any], int] | None, int]
"""How to size the instances of one type: each costs ``extra`` bytes (the second item), plus
``sizeof(obj)`` when ``sizeof`` (the first) is not None. Both census passes follow it."""


@dataclass(frozen=True, slots=True)
class ClassStats:
    """One class in a census: how many objects and their shallow size in bytes."""

    name: str
    count: int
    size: int


@dataclass(frozen=True, slots=True)
class HeapCensus:
    """The result of one census (read-only).

    Args:
        counts: objects per class name.
        sizes: shallow bytes (``sys.getsizeof``) per class name.
        timestamp: seconds since the epoch when the census started.
        duration: seconds the census took.
    """

    counts: Mapping[str, int]
    sizes: Mapping[str, int]
    timestamp: float = 0.0
    duration: float = 0.0

    @property
    def total_objects(self) -> int:
        """All objects counted."""
        return sum(self.counts.values())

    @property
    def total_size(self) -> int:
        """All shallow bytes counted."""
        return sum(self.sizes.values())

    def stats(self, name: str) -> ClassStats:
        """The count and size of one class (zeros when absent)."""
        return ClassStats(name, self.counts.get(name, 0), self.sizes.get(name, 0))

    def top_by_count(self, n: int) -> list[ClassStats]:
        """The ``n`` classes with the most objects, most first (ties by name)."""
        names = sorted(self.counts, key=lambda k: (-self.counts[k], k))[: max(n, 0)]
        return [self.stats(name) for name in names]

    def top_by_size(self, n: int) -> list[ClassStats]:
        """The ``n`` classes with the most bytes, most first (ties by name)."""
        names = sorted(self.sizes, key=lambda k: (-self.sizes[k], k))[: max(n, 0)]
        return [self.stats(name) for name in names]

    def top(self, n: int) -> list[ClassStats]:
        """Top ``n`` by count, plus top ``n`` by size, then ``other`` for the rest (if any).

        The rows add up to the census totals, and there are at most ``2 * n + 1`` of them.
        """
        kept = {row.name: row for row in (*self.top_by_count(n), *self.top_by_size(n))}
        rows = sorted(kept.values(), key=lambda row: (-row.count, row.name))
        rest_count = self.total_objects - sum(row.count for row in rows)
        rest_size = self.total_size - sum(row.size for row in rows)
        if len(kept) < len(self.counts):
            rows.append(ClassStats(OTHER, rest_count, rest_size))
        return rows


def class_name(cls: type) -> str:
    """``dict`` for builtins, ``module.QualName`` for everything else."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None) or cls.__name__
    if not isinstance(module, str) or module == "builtins":
        return str(qualname)
    return f"{module}.{qualname}"


def _safe_getsizeof(obj: object) -> int:
    """``sys.getsizeof``, or 0 for an object whose own ``__sizeof__`` fails."""
    try:
        return sys.getsizeof(obj, 0)
    except Exception:  # a user-defined __sizeof__ may raise anything; the host must not see it
        return 0


def _defining_sizeof(cls: type) -> object:
    """The ``__sizeof__`` that ``sys.getsizeof`` would find on ``cls``'s MRO."""
    for klass in cls.__mro__:
        found = vars(klass).get("__sizeof__")
        if found is not None:
            return found
    return None


_OBJECT_SIZEOF = vars(object)["__sizeof__"]
_C_METHOD_TYPES = (type(_OBJECT_SIZEOF), type(vars(dict)["__sizeof__"]))


def _plan(cls: type, sample: object) -> _Plan:
    """How to size ``cls`` instances exactly as ``sys.getsizeof`` would (see :data:`_Plan`)."""
    sizeof = _defining_sizeof(cls)
    if issubclass(cls, type) or not isinstance(sizeof, _C_METHOD_TYPES):
        # Type objects may or may not carry a GC header, and Python-level __sizeof__ may do
        # anything: ask sys.getsizeof one object at a time.
        return _safe_getsizeof, 0
    if sizeof is _OBJECT_SIZEOF and getattr(cls, "__itemsize__", 1) == 0:
        return None, _safe_getsizeof(sample)
    try:
        before, size, after = sizeof(sample), _safe_getsizeof(sample), sizeof(sample)
    except Exception:  # a C __sizeof__ borrowed by an unrelated class rejects its instances
        return _safe_getsizeof, 0
    if before != after or size < before:  # another thread resized the sample meanwhile
        return _safe_getsizeof, 0
    return sizeof, size - before


def _size_all(plan: _Plan, objs: list[Any]) -> int:
    """The bytes of ``objs`` (all of one type) under ``plan``."""
    sizeof, extra = plan
    try:
        return extra * len(objs) + (sum(map(sizeof, objs)) if sizeof is not None else 0)
    except Exception:  # e.g. a borrowed C __sizeof__ that rejects one of them
        return sum(map(_safe_getsizeof, objs))


def yield_gil() -> None:
    """Let threads waiting for the GIL run (``time.sleep(0)`` releases it)."""
    time.sleep(0)


def take_census(
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    clock: Callable[[], float] = time.time,
    objects: Callable[[], list[Any]] = gc.get_objects,
    between_chunks: Callable[[], None] = yield_gil,
    accelerated: bool | None = None,
) -> HeapCensus:
    """Count and size every GC-tracked object by class; see the module docstring.

    ``objects`` replaces ``gc.get_objects`` (e.g. ``lambda: gc.get_objects(generation=2)``);
    ``between_chunks`` runs after ``objects()`` and after every chunk. ``accelerated`` picks the
    pass: the compiled one (``True``), the pure-Python one (``False``), or the compiled one
    when it is installed (``None``, see :data:`ACCELERATED`). Both give the same result.
    """
    if accelerated is None:
        accelerated = ACCELERATED
    tally = _tally_compiled if accelerated else _tally
    started, tick = clock(), time.perf_counter()
    totals = tally(objects, max(chunk_size, 1), between_chunks)
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for cls, (count, size) in totals.items():
        name = class_name(cls)
        counts[name] = counts.get(name, 0) + count
        sizes[name] = sizes.get(name, 0) + size
    totals.clear()  # the type objects go before the census is returned
    return HeapCensus(
        counts=MappingProxyType(counts),
        sizes=MappingProxyType(sizes),
        timestamp=started,
        duration=time.perf_counter() - tick,
    )


_Totals = dict[type, tuple[int, int]]
"""``{type: (count, size)}``: what a census pass returns."""


def _tally_compiled(
    objects: Callable[[], list[Any]], chunk_size: int, between_chunks: Callable[[], None]
) -> _Totals:
    """:func:`_tally` in C (``activity/_census.c``): the same steps, no bytecode per object.

    It calls ``objects()`` itself, so no bytecode runs between the snapshot and the removal of
    its tuples (the pure-Python pass leaves that one window open).
    """
    if _census is None:
        raise OtelMemoryError("the compiled census (otel_memory.activity._census) is not installed")
    totals, tuples, items = _census.tally(
        objects, chunk_size, between_chunks, _plan, _safe_getsizeof
    )
    if tuples:
        totals[tuple] = (tuples, _tuple_size(tuples, items))
    return totals


def _tally(
    objects: Callable[[], list[Any]], chunk_size: int, between_chunks: Callable[[], None]
) -> _Totals:
    """``{type: (count, size)}`` over ``objects()``, emptying that list as it goes.

    The whole snapshot is partitioned by type in one C call, and exact tuples are tallied and
    dropped, before the GIL is first released: ``gc.get_objects()`` also returns a tuple that
    another thread is still building (``tuple(genexpr)``), and if that thread resizes it while
    we hold a reference, CPython raises ``SystemError`` in the host's code (gh-59313). The
    per-object sizing that follows runs in chunks, with ``between_chunks()`` after each.
    """
    objs = objects()
    totals: _Totals = {}
    buckets: defaultdict[type, list[Any]] = defaultdict(list)
    # Partition in C: for each object, append it to the bucket of its type.
    deque(map(list.append, map(buckets.__getitem__, map(type, objs)), objs), maxlen=0)
    objs.clear()
    tuples = buckets.pop(tuple, None)
    if tuples:
        totals[tuple] = (len(tuples), _tuple_size(len(tuples), sum(map(len, tuples))))
        tuples.clear()
    del tuples
    between_chunks()  # threads that waited through the snapshot go first
    since_pause = 0
    while buckets:
        cls, members = buckets.popitem()
        plan = _plan(cls, members[0])
        count, size = len(members), 0
        while members:
            part = members[-chunk_size:]
            del members[-chunk_size:]  # drop our references early: a dying object is freed here
            size += _size_all(plan, part)
            since_pause += len(part)
            del part
            if since_pause >= chunk_size:  # a C loop never releases the GIL: waiting threads go
                between_chunks()
                since_pause = 0
        totals[cls] = (count, size)
    if since_pause:
        between_chunks()
    return totals


_TUPLE_BASE = sys.getsizeof((None,)) - tuple.__itemsize__
"""``sys.getsizeof`` of a tuple less its items (basic size and GC header)."""


def _tuple_size(tuples: int, items: int) -> int:
    """The ``sys.getsizeof`` total of ``tuples`` exact tuples holding ``items`` items in all."""
    return _TUPLE_BASE * tuples + tuple.__itemsize__ * items


def census_of(objs: Iterable[object], *, accelerated: bool | None = None) -> HeapCensus:
    """A census of the given objects only (tests and tools; same grouping and sizes)."""
    return take_census(objects=lambda: list(objs), accelerated=accelerated)


def _instances(objects: Callable[[], list[Any]], types: tuple[type, ...], limit: int) -> list[Any]:
    """``_census.instances`` in Python: the same result, with the snapshot held across bytecode."""
    if tuple in types:
        raise ValueError("instances() cannot collect tuples")
    wanted = set(types)
    return list(islice((o for o in reversed(objects()) if type(o) in wanted), max(limit, 0)))


def newest_instances(
    types: Sequence[type],
    limit: int,
    *,
    generations: Callable[[int], Callable[[], list[Any]]] | None = None,
    accelerated: bool | None = None,
) -> list[Any]:
    """Up to ``limit`` objects whose exact type is one of ``types``, the newest first.

    The collector keeps each generation in allocation order (survivors are appended to the
    next one), so the youngest generation read from its end, then the next, gives the newest
    objects first. ``generations(g)`` replaces ``functools.partial(gc.get_objects, generation=g)``.
    Exact tuples are never collected (see :func:`_tally`); ``accelerated`` as in
    :func:`take_census`.
    """
    if accelerated is None:
        accelerated = ACCELERATED
    if accelerated and _census is None:
        raise OtelMemoryError("the compiled census (otel_memory._census) is not installed")
    pick = _census.instances if accelerated else _instances
    wanted = tuple(t for t in types if t is not tuple)
    of = generations or _generation
    found: list[Any] = []
    for generation in range(3):
        if len(found) >= limit or not wanted:
            break
        found += pick(of(generation), wanted, limit - len(found))
    return found


def _generation(generation: int) -> Callable[[], list[Any]]:
    """``gc.get_objects`` of one generation, callable from C with no bytecode in between."""
    return functools.partial(gc.get_objects, generation=generation)


PROBED_TUPLES = 8
"""Exact tuples among one call's referrers checked for a holder (more are dropped): the probe
has that many slots, made before the first call, and ``gc.get_referrers`` costs grow with its
number of arguments."""


def _referrers(
    get_referrers: Callable[..., list[Any]], targets: tuple[Any, ...], limit: int
) -> tuple[list[Any], int]:
    """``_census.referrers`` in Python: the same result, unchecked tuples held across bytecode."""
    found = get_referrers(*targets)
    tuples = [o for o in found if type(o) is tuple and o is not targets][: max(limit, 1)]
    found = [o for o in found if type(o) is not tuple]
    if not tuples:
        return found, 1
    sentinel = object()  # a holder that refers to it is the probe or the call's copy of it
    probe = (*tuples, sentinel)
    tuples.clear()
    held: set[int] = set()
    for holder in get_referrers(*probe):
        referents = gc.get_referents(holder)
        if not any(r is sentinel for r in referents):
            held.update(map(id, referents))
    found += [t for t in probe[:-1] if id(t) in held]
    return found, 2


def referrers_of(
    targets: tuple[Any, ...],
    *,
    limit: int = PROBED_TUPLES,
    get_referrers: Callable[..., list[Any]] = gc.get_referrers,
    accelerated: bool | None = None,
) -> tuple[list[Any], int]:
    """``gc.get_referrers(*targets)`` minus the exact tuples nothing the collector sees holds.

    A tuple another thread is still building (``tuple(genexpr)``) is held by that thread's C
    code only; referencing it when that thread resizes it raises ``SystemError`` there
    (gh-59313), so such tuples (and ``targets`` itself) are dropped; see ``_census.c``. Returns
    the referrers and the number of ``get_referrers`` calls made (1, or 2 when tuples were found).
    """
    if accelerated is None:
        accelerated = ACCELERATED
    if accelerated and _census is None:
        raise OtelMemoryError("the compiled census (otel_memory._census) is not installed")
    pick = _census.referrers if accelerated else _referrers
    return pick(get_referrers, targets, limit)
