"""One training run per output directory: an exclusive lock, held from before the run looks for a
checkpoint until its final model is written.

The lock is `flock` on `<directory>/netlang.lock`, so the kernel releases it when the holder ends in
any way (kill -9 included) and a stale lock file never blocks anyone. The holder writes who it is
into the file; a second run fails at once (BusyError, exit 75) and names the holder, instead of
resuming from the first run's checkpoints and mixing two trainings into one model.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time

from netlang.errors import BusyError, OutputError, Span

LOCK_FILE = "netlang.lock"


@contextlib.contextmanager
def directory_lock(directory: str, key: str = "modelPath", span: Span | None = None, enabled: bool = True):
    """Hold the lock of `directory` for the body of the `with`; a no-op when not `enabled` (the
    workers of a parallel training other than rank 0, which write nothing)."""
    if not enabled:
        yield
        return
    path = os.path.join(directory, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"cannot create the lock file '{path}': {exc.strerror or exc}", span, key=key,
                          hint="the output directory must be writable") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"cannot lock '{path}': {exc.strerror or exc}", span, key=key) from None
            raise BusyError(f"the output directory '{directory}' is in use by another training run "
                            f"({_holder(fd)})", span, key=key,
                            hint="wait for that run to end, or give this one another modelPath") from None
        _write_holder(fd)
        yield
    finally:
        os.close(fd)       # closing the descriptor releases the lock


def _write_holder(fd: int) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
          "command": " ".join(["netlang", *sys.argv[1:]])}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode("utf-8"), 0)


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it (it may not have written it yet)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return (f"pid {int(holder['pid'])} on {holder['host']}, started {holder['started']}: "
                f"{holder['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "its lock file does not say which"
