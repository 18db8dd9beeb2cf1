"""A real cgroup v1 memory cgroup for end-to-end tests, or a skip saying why there is none."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

V1_MEMORY = "/sys/fs/cgroup/memory"


@contextlib.contextmanager
def limited_cgroup(limit_bytes: int) -> Iterator[str]:
    """A fresh v1 memory cgroup limited to ``limit_bytes`` (no swap), removed afterwards.

    Children join it by writing their pid to ``<path>/cgroup.procs``. Skips the test where
    cgroups cannot be created: not root, no writable v1 memory hierarchy (the v2 memory
    controller would need delegation that containers rarely give).
    """
    if os.geteuid() != 0:
        pytest.skip("creating a cgroup needs root")
    if not os.path.isfile(os.path.join(V1_MEMORY, "memory.limit_in_bytes")):
        pytest.skip(f"no cgroup v1 memory hierarchy at {V1_MEMORY}")
    path = os.path.join(V1_MEMORY, f"otel-memory-test-{uuid.uuid4().hex[:12]}")
    try:
        os.mkdir(path)
        _write(os.path.join(path, "memory.limit_in_bytes"), str(limit_bytes))
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        pytest.skip(f"cannot create a limited cgroup at {path}: {exc}")
    # Without this, a machine with swap would page the child out instead of killing it.
    with contextlib.suppress(OSError):
        _write(os.path.join(path, "memory.memsw.limit_in_bytes"), str(limit_bytes))
    try:
        yield path
    finally:
        _remove(path)


def _write(path: str, value: str) -> None:
    with open(path, "w") as file:
        file.write(value)


def _remove(path: str) -> None:
    """Kill what is left in the cgroup and remove it (a cgroup with members cannot be removed)."""
    for _ in range(100):
        try:
            with open(os.path.join(path, "cgroup.procs")) as file:
                pids = [int(line) for line in file if line.strip()]
        except OSError:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.rmdir(path)
            return
        except OSError:
            time.sleep(0.05)
