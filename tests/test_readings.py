"""Readings: the /proc fast path agrees with psutil, survives fork, and failures are clean."""

from __future__ import annotations

import contextlib
import os
import sys

import psutil
import pytest

from otel_memory.kernel.readings import MB, PsutilReadingSource, _ProcFiles, parse_statm
from otel_memory.testing import ManualClock

linux_only = pytest.mark.skipif(not _ProcFiles.available(), reason="needs Linux /proc")


def test_reading_is_plausible_and_stamped_by_the_injected_clock():
    clock = ManualClock(1234.5)
    reading = PsutilReadingSource(clock=clock).read()
    assert reading.timestamp == 1234.5
    assert 1 * MB < reading.rss <= reading.vms
    assert 0 < reading.system_available <= reading.system_total
    assert 0 < reading.free_ratio <= 1
    # getrusage's high-water mark is updated lazily by the kernel: it may trail statm slightly
    assert reading.rss_high_water is None or reading.rss_high_water >= reading.rss - 4 * MB


@linux_only
def test_fast_path_reads_the_same_kernel_numbers_as_psutil():
    ours = PsutilReadingSource().read()
    info, system = psutil.Process().memory_info(), psutil.virtual_memory()
    assert ours.system_total == system.total
    assert abs(ours.system_available - system.available) < 256 * MB  # other processes move it
    assert abs(ours.rss - info.rss) < 8 * MB
    assert abs(ours.vms - info.vms) < 64 * MB


def test_psutil_path_for_another_process_matches_psutil():
    parent = psutil.Process(os.getppid())
    reading = PsutilReadingSource(pid=parent.pid).read()
    assert reading.rss_high_water is None
    assert abs(reading.rss - parent.memory_info().rss) < 64 * MB


@linux_only
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_after_fork_the_child_reads_its_own_memory():
    source = PsutilReadingSource()
    source.read()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: grow by 64 MB, then report what the fast path sees against psutil
        ballast = bytearray(64 * MB)
        ballast[::4096] = b"x" * len(ballast[::4096])
        ok = abs(source.read_rss() - psutil.Process().memory_info().rss) < 8 * MB
        os.write(write_fd, b"1" if ok else b"0")
        os._exit(0)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    assert os.read(read_fd, 1) == b"1"
    os.close(read_fd)
    assert status == 0


def test_a_vanished_process_raises_psutil_error():
    proc = psutil.Popen([sys.executable, "-c", "pass"])
    source = PsutilReadingSource(pid=proc.pid)
    proc.wait()
    with pytest.raises(psutil.Error):
        source.read()


# --------------------------------------------------------------------------- compiled statm


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_the_compiled_statm_reading_is_built_and_used_by_default():
    from otel_memory.kernel import readings

    assert readings.ACCELERATED, "otel_memory.kernel._proc was not built (is a C compiler missing?)"
    assert readings._ProcFiles()._statm_reader is not None


@contextlib.contextmanager
def _open_bytes(tmp_path, content: bytes):
    """A read-only descriptor of a file holding ``content`` (a crafted /proc file)."""
    path = tmp_path / "crafted"
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "content",
    [b"8318 6942 2615 1 0 4561 0\n", b"1 0 0 0 0 0 0\n", b"123456789 98765432 0 0 0 0 0\n"],
)
def test_the_compiled_and_the_python_statm_parse_agree(tmp_path, content):
    _proc = pytest.importorskip("otel_memory.kernel._proc")
    with _open_bytes(tmp_path, content) as fd:
        for page_size in (4096, 16384):
            assert _proc.statm(fd, page_size) == parse_statm(content, page_size)


def test_the_compiled_statm_reading_rejects_what_is_not_statm(tmp_path):
    _proc = pytest.importorskip("otel_memory.kernel._proc")
    with _open_bytes(tmp_path, b"not numbers\n") as fd, pytest.raises(ValueError, match="statm"):
        _proc.statm(fd, 4096)
    with pytest.raises(OSError):
        _proc.statm(fd, 4096)  # closed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
@pytest.mark.parametrize("accelerated", [True, False])
def test_both_statm_readings_read_this_process(accelerated):
    if accelerated:
        pytest.importorskip("otel_memory.kernel._proc")
    rss, vms = _ProcFiles(accelerated=accelerated).rss_vms()
    info = psutil.Process().memory_info()
    assert abs(rss - info.rss) < 16 * MB and abs(vms - info.vms) < 64 * MB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_sources_that_are_dropped_close_their_files():
    import gc

    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        PsutilReadingSource().read()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before


_MEMINFO = (
    b"MemTotal:       24684096 kB\nMemFree:        23100000 kB\n"
    b"MemAvailable:   24159896 kB\nBuffers:           12345 kB\n"
)


@pytest.mark.parametrize(
    "content",
    [_MEMINFO, _MEMINFO.replace(b"24159896", b"0"), b"MemAvailable: 1 kB\nMemTotal: 2 kB\n"],
)
def test_the_compiled_and_the_python_meminfo_parse_agree(tmp_path, content):
    from otel_memory.kernel.readings import parse_meminfo

    _proc = pytest.importorskip("otel_memory.kernel._proc")
    with _open_bytes(tmp_path, content) as fd:
        assert _proc.meminfo(fd) == parse_meminfo(content)


def test_both_meminfo_parses_reject_a_kernel_without_memavailable(tmp_path):
    from otel_memory.kernel.readings import parse_meminfo

    _proc = pytest.importorskip("otel_memory.kernel._proc")
    content = b"MemTotal:       24684096 kB\nMemFree:        23100000 kB\n"
    with _open_bytes(tmp_path, content) as fd, pytest.raises(ValueError):
        _proc.meminfo(fd)
    with pytest.raises(ValueError):
        parse_meminfo(content)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
@pytest.mark.parametrize("accelerated", [True, False])
def test_both_meminfo_readings_read_this_host(accelerated):
    if accelerated:
        pytest.importorskip("otel_memory.kernel._proc")
    available, total = _ProcFiles(accelerated=accelerated).available_total()
    host = psutil.virtual_memory()
    assert total == host.total
    assert abs(available - host.available) < 256 * MB
