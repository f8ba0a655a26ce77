"""Output directories: made before a command writes into them, probed by `netlang check`.

A directory that cannot be made or written (a file in the way, no permission, a read-only file
system) is an OutputError (exit 73, sysexits' "can't create") at the key that names it, before any
work is done rather than after the first epoch.
"""
from __future__ import annotations

import contextlib
import os
import tempfile

from netlang.errors import OutputError, Span


def output_directory(path: str) -> str:
    """The directory a file path such as modelPath or outputPath writes into."""
    return os.path.dirname(os.path.abspath(path))


def make_directory(directory: str, key: str, span: Span | None = None) -> None:
    """Create `directory` (and its parents) for the setting `key`, or raise an OutputError."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise _cannot(directory, key, span, exc) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into the directory '{directory}'", span, key=key,
                          hint="choose a directory you may write to")


def probe_directory(directory: str, key: str, span: Span | None = None) -> None:
    """Check that `directory` can be created and written, by doing so; whatever the probe created
    is removed again, so `check` leaves the file system as it found it."""
    missing = []
    existing = os.path.abspath(directory)
    while not os.path.isdir(existing):
        missing.append(existing)
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    created = []
    try:
        for path in reversed(missing):
            os.mkdir(path)
            created.append(path)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise _cannot(directory, key, span, exc) from None
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(path)


def _cannot(directory: str, key: str, span: Span | None, exc: OSError) -> OutputError:
    where = f" ('{exc.filename}')" if exc.filename and exc.filename != directory else ""
    return OutputError(f"cannot create the directory '{directory}': {exc.strerror or exc}{where}", span, key=key,
                       hint="the directory's parents must be directories you may write to")
