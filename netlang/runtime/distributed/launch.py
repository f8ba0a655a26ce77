"""Making a failed rank end the whole job instead of hanging it. (Detecting an MPI launch is
netlang/launcher.py's: it must run before NumPy is imported.)

    install_failure_handlers(comm)            excepthook that aborts all ranks; announces pid → rank
    failure_guard(comm)                       context manager around a rank's work (the trainer's body)

Why this is needed: when one rank of an MPI job raises and Python exits normally, mpi4py's
MPI_Finalize waits for the other ranks, which wait in their next collective for the failed one —
the job hangs forever. The cure is MPI_Abort, which makes the launcher kill every rank and exit
non-zero. `failure_guard` catches everything that ends a rank (exceptions, `sys.exit(non-zero)`,
Ctrl-C), prints which rank failed and why, and aborts; the excepthook catches what escapes
elsewhere. A rank killed outright (SIGKILL, the OOM killer) cannot say anything: MPICH's hydra
then kills the other ranks within milliseconds and prints the pid of a process that ended by a
signal, which the announcement line (`netlang: rank 1 of 2 is pid 4242 on host-a`) maps to a rank.
That is usually the killed rank; when hydra reaps it before it notices its PMI connection closing,
it is the lowest rank, killed by hydra itself (a race inside hydra that nothing here can decide).
Where the launcher does not clean up, the communicator's watchdog (see comm.py) notices the dead
peer and aborts, naming its rank.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import traceback

from netlang.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, NetlangError, format_error


def install_failure_handlers(comm, announce: bool = True) -> None:
    """Make an uncaught exception on any rank abort the whole job; optionally announce pid → rank.

    Does nothing for a job of one rank: there, Python's own handling is right.
    """
    if comm.size <= 1:
        return
    if announce:
        _write_stderr(f"netlang: rank {comm.rank} of {comm.size} is pid {os.getpid()} on "
                      f"{socket.gethostname()}")

    def abort_on_uncaught(exc_type, exc, tb):
        _abort_for(comm, exc, tb)

    sys.excepthook = abort_on_uncaught


@contextlib.contextmanager
def failure_guard(comm):
    """Run the body of a rank; if it fails in any way, end every rank of the job (exit non-zero).

    NetlangErrors keep their exit code (78 bad config, 65 bad data …), Ctrl-C gives 130, anything
    else 70. A `SystemExit(0)` passes through: a clean early exit is not a failure.
    """
    try:
        yield
    except SystemExit as exc:
        if comm.size <= 1 or exc.code in (None, 0):
            raise
        _abort_for(comm, exc, exc.__traceback__)
    except BaseException as exc:  # noqa: BLE001 - every way out of a rank must end the job
        if comm.size <= 1:
            raise
        _abort_for(comm, exc, exc.__traceback__)


def exit_code_of(exc: BaseException) -> int:
    if isinstance(exc, NetlangError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, SystemExit) and isinstance(exc.code, int) and exc.code != 0:
        return exc.code
    return EXIT_INTERNAL


def failure_message(rank: int, size: int, exc: BaseException, tb) -> str:
    """What a failing rank prints: its rank, then the error (a user error without a traceback)."""
    head = f"netlang: rank {rank} of {size} failed"
    if isinstance(exc, NetlangError):
        return f"{head}: {format_error(exc, with_kind=True)}"
    if isinstance(exc, KeyboardInterrupt):
        return f"{head}: interrupted"
    if isinstance(exc, SystemExit):
        return f"{head}: exit status {exc.code}"
    detail = "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
    return f"{head}: {type(exc).__name__}: {exc}\n{detail}"


def _abort_for(comm, exc: BaseException, tb) -> None:
    message = failure_message(comm.rank, comm.size, exc, tb)
    # A launcher that tears the job down after a rank was killed interrupts the others: say
    # which peer is gone, since the interrupted rank is not the one that failed.
    for peer in getattr(comm, "lost_peers", lambda: [])():
        pid, host = comm.peers[peer]
        message += f"\nnetlang: rank {peer} (pid {pid} on {host}) has died"
    comm.abort(f"{message}\nnetlang: aborting all {comm.size} ranks", exit_code_of(exc))


def _write_stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
