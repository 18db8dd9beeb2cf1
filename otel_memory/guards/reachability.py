"""Is a growing class's new growth reachable? A bounded backward search from its newest instances.

    from otel_memory.guards.reachability import ReachabilityCheck

    check = ReachabilityCheck()
    verdict = check.check("app.Message", per_census=20_000)
    if verdict.reachable_enough:
        print(verdict.path)   # ('module app', 'dict app._cache', 'app.Message')

A census counts unreachable cycles until the host's next full collection, which in a service
with a large old heap can be hours away. So before a class is named, a sample of its newest
instances is searched *backwards*: ``gc.get_referrers`` of the frontier, level by level, until
each sampled instance is tied to a **root** or the search runs dry. Roots are what keeps objects
alive outside the collector's view of garbage:

- a module's ``__dict__`` (a module global): ``module app``;
- a class's ``__dict__`` (a class attribute): ``class app.Registry``;
- a local variable of a frame that another thread is running (``sys._current_frames()``): live
  frames do not show their locals to ``gc.get_referrers``, so when the search meets an object
  that nothing the collector sees refers to, those locals are indexed (garbage never needs it:
  each object of a cycle is held by another; and reading a running frame's locals before 3.13
  leaves a snapshot of them on the frame until its next refresh, so it is done only then).

Closure cells and ``functools.lru_cache`` caches are reached through the function or wrapper that
holds them, and that through its module or class. A search that runs dry proves the sampled objects
are garbage (nothing outside them refers to them); a search that hits a limit proves nothing.
Only a sample whose majority is tied to a root makes the class a suspect (``reachable_enough``):
garbage piling up between collections never does, and neither do the few in-flight objects of a
class whose growth is garbage, since the sample is spread over the whole new growth, not its
last objects.

**Never in the host's way.** No application code runs (namespaces are read with ``dict``'s own
methods, lazy modules stay unloaded), and a tuple another thread is still building is never
held (:func:`~..activity.census.referrers_of` drops the exact tuples nothing visible holds:
holding one makes that thread's ``tuple()`` raise ``SystemError``, gh-59313).

**Not fooled by itself.** The sample, the frontier, the argument tuples and every container of the
search refer to the objects searched: their ids are excluded, and the search's own thread is not a
root. **Not ours.** Paths through ``otel_memory``'s and the OpenTelemetry SDK's modules, instances
and threads' frames do not count: what they hold is their own work. **Never** ``gc.collect()``.

**Bounded.** ``gc.get_referrers`` walks the whole heap once per call, at a cost that grows with its
number of arguments: a check makes at most :attr:`Limits.calls` such calls of at most
:attr:`Limits.frontier` objects, visits at most :attr:`Limits.visited` objects and stops at
:attr:`Limits.seconds` of its thread's CPU time (about 15 ms a call on a 1M-object heap, with the
GIL held, as for ``gc.get_objects()``; waiting threads get it between calls).
"""

from __future__ import annotations

import builtins
import functools
import gc
import inspect
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from otel_memory.activity.census import class_name, newest_instances, referrers_of

OWN_MODULES = ("otel_memory", "opentelemetry")
"""Modules whose globals, instances and frames are the monitor's or the SDK's own work."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one check may spend.

    Args:
        sample: instances of the class searched from.
        pool: newest instances the sample is spread over (at most; the census growth sets it).
        frontier: objects per ``gc.get_referrers`` call (its cost grows with them).
        calls: ``gc.get_referrers`` calls per check (each walks the whole heap).
        visited: objects visited per check.
        seconds: CPU seconds of the checking thread per check.
    """

    sample: int = 8
    pool: int = 4_096
    frontier: int = 64
    calls: int = 12
    visited: int = 5_000
    seconds: float = 0.25


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one check.

    Args:
        name: the class checked.
        sampled: instances searched from (0: none found).
        reachable: of which tied to a root.
        path: root first, one sampled instance last (empty when none is reachable).
        visited: objects visited.
        calls: ``gc.get_referrers`` calls made.
        seconds: CPU seconds spent.
        exhausted: the search ran dry before any limit (its "unreachable" is a proof).
    """

    name: str
    sampled: int
    reachable: int
    path: tuple[str, ...]
    visited: int
    calls: int
    seconds: float
    exhausted: bool

    @property
    def reachable_enough(self) -> bool:
        """Most of the sample is tied to a root: the growth is not garbage."""
        return self.sampled > 0 and 2 * self.reachable > self.sampled


def _is_own_module(name: object) -> bool:
    return isinstance(name, str) and any(
        name == own or name.startswith(own + ".") for own in OWN_MODULES
    )


def _is_own_object(obj: object) -> bool:
    return _is_own_module(getattr(type(obj), "__module__", None))


def resolve(name: str) -> list[type]:
    """The classes a census name stands for (usually one), without importing or running code."""
    if "." not in name:
        found = vars(builtins).get(name)
        return [found] if isinstance(found, type) else []
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj: Any = module
        for attr in parts[cut:]:
            # the namespace, not getattr(): a module's __getattr__ (PEP 562), a lazy module or
            # a descriptor would run code
            namespace = _namespace(obj)
            obj = dict.get(namespace, attr) if namespace is not None else None
            if obj is None:
                break
        if isinstance(obj, type) and class_name(obj) == name:
            return [obj]
        break
    return [cls for cls in _all_classes() if class_name(cls) == name]  # e.g. <locals> classes


def _namespace(obj: Any) -> dict[Any, Any] | None:
    """``obj.__dict__`` as a dict, bypassing an overridden ``__getattribute__``; else None."""
    try:
        namespace = object.__getattribute__(obj, "__dict__")
    except Exception:  # no __dict__, or a __dict__ property of the application's that raised
        return None
    if isinstance(namespace, types.MappingProxyType):  # a class: the dict behind its proxy
        namespace = next((d for d in gc.get_referents(namespace) if isinstance(d, dict)), None)
    return namespace if isinstance(namespace, dict) else None


def _all_classes() -> list[type]:
    """Every class alive, through ``__subclasses__`` from ``object``."""
    seen: set[int] = set()
    found: list[type] = []
    todo: list[type] = [object]
    while todo:
        cls = todo.pop()
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        found.append(cls)
        try:
            todo.extend(type.__subclasses__(cls))
        except TypeError:  # a metaclass with its own __subclasses__ signature
            continue
    return found


@dataclass(frozen=True, slots=True)
class _FrameLocal:
    thread: str
    function: str
    variable: str


class _Search:
    """One backward search; every container it makes is registered in ``own`` and skipped."""

    def __init__(self, limits: Limits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self.started = clock()
        self.own: set[int] = set()
        self.keep: dict[int, Any] = {}  # id -> object: ids stay valid while the search runs
        self.holders: dict[int, list[int]] = {}  # child id -> ids of the objects referring to it
        self.roots: dict[int, str] = {}  # id of a root object -> its label
        self.locals: dict[int, _FrameLocal] = {}  # id of a value held by another thread's frame
        self.module_dicts: dict[int, str] = {}
        self.expanded: set[int] = set()  # ids searched for referrers
        self.pinned: list[object] = []  # our containers, alive until the end: ids not reused
        self.calls = 0
        self.exhausted = False
        for container in (self.own, self.keep, self.holders, self.roots, self.locals, self.pinned):
            self.own.add(id(container))

    # ----------------------------------------------------------------- roots

    def index_modules(self) -> None:
        for name, module in list(sys.modules.items()):
            namespace = _namespace(module)  # never getattr(): a lazy module would load
            if namespace is not None and not _is_own_module(name):
                # One namespace may have several names (multiprocessing aliases the main module
                # as __mp_main__): the first wins, and __main__ over any alias.
                known = self.module_dicts.get(id(namespace))
                if known is None or name == "__main__":
                    self.module_dicts[id(namespace)] = name

    def index_frames_if_needed(self) -> None:
        """Index other threads' locals, if an object searched has no holder the collector sees."""
        if all(i in self.holders or i in self.roots for i in self.expanded):
            return
        threads = {t.ident: t.name for t in threading.enumerate()}
        me = threading.get_ident()
        frames = sys._current_frames()
        self.own.add(id(frames))
        self.pinned.append(frames)
        for ident, top in frames.items():
            if ident == me:
                continue
            frame: types.FrameType | None = top
            while frame is not None:
                self._index_frame(frame, threads.get(ident, f"#{ident}"))
                frame = frame.f_back
        del frames

    def _index_frame(self, frame: types.FrameType, thread: str) -> None:
        module = frame.f_globals.get("__name__")
        if _is_own_module(module):
            return
        if not frame.f_code.co_flags & inspect.CO_OPTIMIZED:
            return  # module-level code (its globals are module roots) or a class body
        local_values = frame.f_locals  # a snapshot dict before 3.13, a proxy after: exclude it
        self.own.add(id(local_values))
        self.pinned.append(local_values)
        code = frame.f_code
        function = f"{module}.{getattr(code, 'co_qualname', code.co_name)}"
        for variable, value in list(local_values.items()):
            if id(value) not in self.locals:
                self.locals[id(value)] = _FrameLocal(thread, function, variable)
                self.keep.setdefault(id(value), value)

    # ----------------------------------------------------------------- the search

    def out_of_budget(self) -> bool:
        return (
            self.calls >= self.limits.calls
            or len(self.keep) >= self.limits.visited + len(self.locals)
            or self.clock() - self.started >= self.limits.seconds
        )

    def run(self, sample: list[Any]) -> None:
        self.own.add(id(sample))
        frontier: list[Any] = []
        self.own.add(id(frontier))
        self.pinned += (sample, frontier)
        for obj in sample:
            if id(obj) not in self.keep:
                self.keep[id(obj)] = obj
                frontier.append(obj)
        wanted = len(sample) // 2 + 1
        while frontier:
            if self._reached(sample) >= wanted:
                return
            if self.out_of_budget():
                return
            chunk = frontier[: self.limits.frontier]
            del frontier[: self.limits.frontier]
            args = tuple(chunk)
            self.expanded.update(map(id, chunk))
            self.own.add(id(chunk))
            self.own.add(id(args))
            found, calls = referrers_of(args)  # without tuples still being built
            self.calls += calls
            self.own.add(id(found))
            targets = {id(obj) for obj in chunk}
            self.own.add(id(targets))
            for referrer in found:
                self._edge(referrer, targets, frontier)
            found.clear()
            chunk.clear()
            self.pinned += (found, chunk, args, targets)
            del found, chunk, args
            time.sleep(0)  # one call holds the GIL for a whole heap walk: waiting threads go first
        self.exhausted = True

    def _edge(self, referrer: Any, targets: set[int], frontier: list[Any]) -> None:
        rid = id(referrer)
        if rid in self.own or (isinstance(referrer, types.FrameType) and self._is_mine(referrer)):
            return
        if _is_own_object(referrer):
            return  # the monitor's or the SDK's own work holds it
        if isinstance(referrer, dict) and rid not in self.module_dicts and self._is_own_namespace(
            referrer
        ):
            return
        children = [c for c in gc.get_referents(referrer) if id(c) in targets]
        for child in children:
            self.holders.setdefault(id(child), []).append(rid)
        del children
        if rid in self.keep:
            return
        self.keep[rid] = referrer
        label = self._root_label(referrer)
        if label is not None:
            self.roots[rid] = label
        else:
            frontier.append(referrer)

    def _is_mine(self, frame: types.FrameType) -> bool:
        current: types.FrameType | None = sys._getframe()
        while current is not None:
            if current is frame:
                return True
            current = current.f_back
        return False

    def _is_own_namespace(self, namespace: dict[Any, Any]) -> bool:
        # dict's own methods: a subclass's overrides are the application's code
        return _is_own_module(dict.get(namespace, "__name__")) and dict.__contains__(
            namespace, "__loader__"
        )

    def _root_label(self, obj: Any) -> str | None:
        if id(obj) in self.module_dicts:
            return f"module {self.module_dicts[id(obj)]}"
        if isinstance(obj, type):
            return None if _is_own_module(obj.__module__) else f"class {class_name(obj)}"
        return None

    # ----------------------------------------------------------------- results

    def _tied(self, start: int, memo: dict[int, bool]) -> bool:
        """Whether ``start`` reaches a root through the holders found so far."""
        stack, seen = [start], {start}
        while stack:
            node = stack.pop()
            if node in self.roots or node in self.locals or memo.get(node):
                memo[start] = True
                return True
            for holder in self.holders.get(node, ()):
                if holder not in seen:
                    seen.add(holder)
                    stack.append(holder)
        return False

    def _reached(self, sample: list[Any]) -> int:
        memo: dict[int, bool] = {}
        return sum(self._tied(id(obj), memo) for obj in sample)

    def path(self, start: Any) -> tuple[str, ...]:
        """Root first, ``start`` last, over the shortest chain of holders found."""
        parent: dict[int, int] = {}
        queue, end = deque([id(start)]), None
        while queue:
            node = queue.popleft()
            if node in self.roots or node in self.locals:
                end = node
                break
            for holder in self.holders.get(node, ()):
                if holder not in parent and holder != id(start):
                    parent[holder] = node
                    queue.append(holder)
        if end is None:
            return ()
        chain = [end]
        while chain[-1] != id(start):
            chain.append(parent[chain[-1]])
        objects = [self.keep[i] for i in chain]
        return tuple(_render(objects, self.roots.get(end), self.locals.get(end)))


@dataclass(slots=True)
class _Naming:
    """Where :func:`_render` stands: the holder, the name it goes by, what its child is called."""

    holder: Any
    named: str = ""  # the holder's name (global, attribute, local)
    pending: str | None = None  # the next object's name, set by folded plumbing
    namespace: str = ""  # the holder is a namespace dict: its keys name its values
    closure_of: Any = None  # the function whose closure tuple was just folded

    def step(self, obj: Any) -> str | None:
        """The name of ``obj`` held by the holder; None when ``obj`` is plumbing (folded)."""
        holder, named = self.holder, self.named
        name, self.pending = self.pending, None
        if self.namespace and isinstance(holder, dict):
            name = f"{self.namespace}.{_key_of(holder, obj)}"
        self.namespace = ""
        self.holder = obj
        if isinstance(holder, type) and _is_namespace(holder, obj):
            self.namespace = class_name(holder)
        elif isinstance(holder, types.FunctionType) and obj is holder.__closure__:
            self.closure_of = holder
        elif isinstance(holder, types.FunctionType) and obj is holder.__defaults__:
            self.pending = f"{named} default"
        elif isinstance(obj, types.CellType) and self.closure_of is not None:
            cells = self.closure_of.__closure__ or ()
            index = next((i for i, cell in enumerate(cells) if cell is obj), -1)
            variable = self.closure_of.__code__.co_freevars[index] if index >= 0 else "?"
            self.pending, self.closure_of = f"{named} cell {variable}", None
        elif isinstance(holder, functools._lru_cache_wrapper) and isinstance(obj, dict):
            self.pending = f"{named} cache"
        elif _is_namespace(holder, obj):  # an instance's __dict__
            self.namespace = named or class_name(type(holder))
        else:
            if isinstance(holder, functools._lru_cache_wrapper):
                name = f"{named} cache"
            elif name is None and _has_attributes(holder):
                attribute = _attribute_of(holder, obj)
                if attribute is not None:
                    name = f"{named or class_name(type(holder))}.{attribute}"
            self.named = name or ""
            return self.named
        self.named = named
        return None


def _render(chain: list[Any], root: str | None, local: _FrameLocal | None) -> Iterable[str]:
    """Readable steps: the root, then each object by type and the name it is held under.

    Plumbing (a class's or an instance's ``__dict__``, a closure tuple and its cell, a cache's
    dict) is folded into the name of what it holds; the keys of plain dicts are the
    application's data and never appear.
    """
    if local is not None:
        yield f"thread {local.thread} frame {local.function}"
        naming = _Naming(holder=None, pending=f"local {local.variable}")
        steps = chain
    else:
        yield root or "?"
        named = root.split(" ", 1)[1] if root else ""
        namespace = named if isinstance(chain[0], dict) else ""  # a module's globals
        naming = _Naming(holder=chain[0], named=named, namespace=namespace)
        steps = chain[1:]
    for obj in steps:
        name = naming.step(obj)
        if name is not None:
            yield f"{_type_label(obj)} {name}".rstrip()


def _type_label(obj: Any) -> str:
    if isinstance(obj, functools._lru_cache_wrapper):
        return "lru_cache"
    return class_name(type(obj))


def _is_namespace(holder: Any, obj: Any) -> bool:
    """Whether ``obj`` is ``holder``'s own ``__dict__`` (for a class: the dict behind its proxy)."""
    return isinstance(obj, dict) and _namespace(holder) is obj


def _has_attributes(holder: Any) -> bool:
    return not isinstance(holder, (dict, list, set, frozenset, tuple, type))


def _attribute_of(holder: Any, obj: Any) -> str | None:
    """The attribute of an instance that holds ``obj`` (in its ``__dict__``)."""
    namespace = _namespace(holder)
    if namespace is None:
        return None
    key = _key_of(namespace, obj)
    return None if key == "?" else key


def _key_of(namespace: dict[Any, Any], obj: Any) -> str:
    for key, value in list(dict.items(namespace)):
        if value is obj:
            return str(key)
    return "?"


class ReachabilityCheck:
    """Checks classes (by census name) for reachable new growth; see the module docstring.

    Args:
        limits: what one check may spend.
        clock: CPU time of the checking thread (tests may slow it down).
    """

    def __init__(
        self, limits: Limits | None = None, *, clock: Callable[[], float] = time.thread_time
    ) -> None:
        self.limits = limits or Limits()
        self.clock = clock

    def check(self, name: str, per_census: int = 0) -> Verdict:
        """Search from a sample spread over the newest ``per_census`` instances of ``name``."""
        started = self.clock()
        classes = [cls for cls in resolve(name) if cls is not tuple]
        pool = newest_instances(classes, max(self.limits.sample, min(per_census, self.limits.pool)))
        step = max(1, len(pool) // self.limits.sample)
        sample = pool[::step][: self.limits.sample]
        pool.clear()
        del pool
        search = _Search(self.limits, self.clock)
        try:
            search.index_modules()
            search.run(sample)
            if 2 * search._reached(sample) <= len(sample):
                search.index_frames_if_needed()
            memo: dict[int, bool] = {}
            tied = [obj for obj in sample if search._tied(id(obj), memo)]
            path = search.path(tied[0]) if tied else ()
            return Verdict(
                name=name,
                sampled=len(sample),
                reachable=len(tied),
                path=path,
                visited=len(search.keep),
                calls=search.calls,
                seconds=self.clock() - started,
                exhausted=search.exhausted,
            )
        finally:
            sample.clear()
            search.keep.clear()
            search.locals.clear()
            search.pinned.clear()
