"""Writing a command's output file the Unix way: ``-`` is stdout, nothing is clobbered.

    from otel_memory.cli.output import write_output

    where = write_output("report.html", page, force=args.force)   # None when it went to stdout

* ``-`` writes standard output.
* An existing file is replaced only with ``force``; a path that exists and is not a regular file
  (a directory, a device such as ``/dev/full``, a FIFO, a socket) is never replaced, with or
  without ``force``: writing there is almost always a mistake, and replacing a device node as
  root would break the system.
* The text goes to a temporary file in the target's directory, renamed over the target only
  once complete, so a reader never sees half a page and a failed write leaves nothing behind.
  The file is created with mode 0666 minus the umask, as any other program's output.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
from pathlib import Path

from otel_memory.cli.errors import OutputError, shown

STDOUT = "-"
"""The output name meaning standard output."""

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _error(path: str, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {shown(path)}: {exc.strerror or exc}")


def _existing(path: str, force: bool) -> bool:
    """Whether ``path`` exists (then a regular file that ``force`` allows replacing)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _error(path, exc) from None
    if not stat.S_ISREG(info.st_mode):
        raise OutputError(f"{shown(path)} is {_kind(info.st_mode)}; not replaced (name a file)")
    if not force:
        raise OutputError(f"{shown(path)} already exists; use --force to replace it")
    return True


def _create_temporary(directory: str, name: str) -> tuple[int, str]:
    for _ in range(100):
        temporary = os.path.join(directory, f".{name[:200]}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 minus the umask, like any program's output (mkstemp would give 0600).
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", directory)


def write_output(path: str, text: str, *, force: bool = False) -> str | None:
    """Write ``text`` to ``path`` (see the module rules); the path written, None for stdout.

    Raises :class:`~otel_memory.cli.errors.OutputError` naming the path and the reason.
    """
    if not path:
        raise OutputError("the output name is empty (use - for standard output)")
    if path == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    # Write beside the real file when the name is a symbolic link to one, so that the link
    # stays a link.
    target = os.path.realpath(path) if os.path.islink(path) else path
    replacing = _existing(target, force)
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        raise OutputError(f"cannot write {shown(path)}: no such directory {shown(directory)}")
    temporary = ""
    try:
        handle, temporary = _create_temporary(directory, os.path.basename(target))
        with open(handle, "w", encoding="utf-8") as out:
            out.write(text)
        if replacing:
            _existing(target, force)  # still a regular file: it may have changed meanwhile
            os.replace(temporary, target)
        else:
            # link() fails if the name was taken meanwhile, where rename() would clobber it.
            try:
                os.link(temporary, target)
            except FileExistsError:
                _existing(target, force)
                raise
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                os.replace(temporary, target)  # no hard links on this file system
            else:
                os.unlink(temporary)
        temporary = ""
    except OSError as exc:
        raise _error(path, exc) from None
    finally:
        if temporary:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    return str(Path(path))
