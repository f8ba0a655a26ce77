"""The one communication interface of data-parallel training, and its implementations.

A `Communicator` moves NumPy arrays between the K ranks of a job. It is deliberately small and
array-based, so that a NCCL communicator for GPU buffers can implement it too:

    rank, size                     this process's rank and the number of ranks K
    allreduce_sum(buf)             in place, on a contiguous 1-D array
    allgather(array) -> (K, ...)   every rank gives an array of the same shape and dtype
    allgatherv(array, counts)      1-D arrays of per-rank lengths; returns their concatenation
    alltoallv(chunks, recv_counts) chunks[r] goes to rank r; returns what every rank sent here
    bcast(value, root)             arrays in place (returned), other objects pickled (returned)
    barrier()
    abort(message, code)           end the whole job now, with `message` on stderr
    bytes_sent                     payload bytes this rank has put on the wire

and the non-blocking forms the gradient exchange overlaps with backward; each returns a `Request`
whose `test()` lets the exchange progress without blocking and whose `wait()` returns the result:

    iallreduce_sum(buf)                               -> buf, summed in place
    iallgatherv(array, counts)                        -> the concatenation
    ialltoallv(send, send_counts, recv_counts)        -> what every rank sent here, in rank order

All ranks must start collectives in the same order (MPI's rule, also for non-blocking ones).

`bytes_sent` counts what a bandwidth-optimal algorithm sends, so that 32-bit and quantised
aggregation compare honestly: an all-reduce of n bytes sends 2(K-1)/K * n (ring: reduce-scatter
plus all-gather); an all-gather sends the rank's own part to each of the K-1 peers; an all-to-all
sends every chunk except the one addressed to itself; a broadcast costs the root n * (K-1).

`MPICommunicator` uses mpi4py's buffer-based, non-blocking collectives and waits for them itself,
with a watchdog: while waiting it checks every `LIVENESS_INTERVAL_S` that the peers on this host
are still alive and, when one is gone (or an optional timeout passed), aborts the job with a
message naming the lost rank, instead of hanging. (MPICH's launcher normally tears the job down
itself when a process dies; the watchdog covers launchers that do not, e.g. `mpiexec
-disable-auto-cleanup`.)

Waiting does not keep a core busy for long: a waiting rank polls (MPI_Test, which also drives
MPICH's progress engine; MPICH runs no progress thread of its own unless MPIR_CVAR_ASYNC_PROGRESS
asks for one, which would need a spare core) for `SPIN_S`, about the time a peer of the same step
takes to arrive, then sleeps between polls, in naps growing to `MAX_NAP_S`. So a rank waiting for
a slower peer, or for rank 0 writing a checkpoint, gives its core back to whatever else runs
there. On a node with more ranks than cores a waiting rank does not spin at all: there the core
it would spin on is a computing rank's.
"""
from __future__ import annotations

import os
import pickle
import socket
import sys
import time
from typing import Any, Sequence

import numpy as np

from netlang.errors import EXIT_INTERNAL, ConfigError
from netlang.launcher import detect_launch, usable_cores

LIVENESS_INTERVAL_S = 0.5  # how often a waiting rank checks that its local peers still exist
SPIN_S = 0.002             # busy-poll this long, then sleep between polls
FIRST_NAP_S = 0.00005      # the first sleep between polls; each next one is twice as long …
MAX_NAP_S = 0.001          # … up to this
TIMEOUT_ENV = "NETLANG_MPI_TIMEOUT"  # seconds a collective may wait before the job is aborted
ABORT_GRACE_S = 0.2  # between printing why the job is aborted and aborting it


class Communicator:
    """The interface; see the module docstring. `LocalCommunicator` is the K = 1 case."""

    rank: int = 0
    size: int = 1
    device_buffers = False     # collectives take host (NumPy) arrays; see nccl.NcclCommunicator

    def __init__(self) -> None:
        self.bytes_sent = 0

    def allreduce_sum(self, buf: np.ndarray) -> None:
        self.iallreduce_sum(buf).wait()

    def allgatherv(self, array: np.ndarray, counts: Sequence[int]) -> np.ndarray:
        return self.iallgatherv(array, counts).wait()

    def alltoallv(self, chunks: Sequence[np.ndarray], recv_counts: Sequence[int]) -> list[np.ndarray]:
        if len(chunks) != self.size or len(recv_counts) != self.size:
            raise ValueError(f"alltoallv takes one chunk and one count per rank ({self.size})")
        dtype = chunks[0].dtype
        send = np.concatenate([np.ascontiguousarray(c, dtype=dtype).ravel() for c in chunks])
        recv = self.ialltoallv(send, [int(c.size) for c in chunks], recv_counts).wait()
        starts = _displacements(recv_counts)
        return [recv[s:s + int(c)] for s, c in zip(starts, recv_counts)]

    def iallreduce_sum(self, buf: np.ndarray) -> Request:
        raise NotImplementedError

    def iallgatherv(self, array: np.ndarray, counts: Sequence[int]) -> Request:
        raise NotImplementedError

    def ialltoallv(self, send: np.ndarray, send_counts: Sequence[int], recv_counts: Sequence[int]) -> Request:
        raise NotImplementedError

    def allgather(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def bcast(self, value: Any, root: int = 0) -> Any:
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def abort(self, message: str, code: int = EXIT_INTERNAL) -> None:
        raise NotImplementedError

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class Request:
    """A collective in flight: `test()` (True once done; never blocks), `wait()` -> its result."""

    def test(self) -> bool:
        raise NotImplementedError

    def wait(self):
        raise NotImplementedError


class Done(Request):
    """A collective that completed when it was started (one rank)."""

    def __init__(self, result):
        self.result = result

    def test(self) -> bool:
        return True

    def wait(self):
        return self.result


class LocalCommunicator(Communicator):
    """A job of one rank: reductions are the identity and nothing goes on the wire."""

    def iallreduce_sum(self, buf: np.ndarray) -> Request:
        _check_flat(buf, "allreduce_sum")
        return Done(buf)

    def allgather(self, array: np.ndarray) -> np.ndarray:
        return np.array(array)[None]

    def iallgatherv(self, array: np.ndarray, counts: Sequence[int]) -> Request:
        _check_counts(array, counts, 0)
        return Done(np.array(array))

    def ialltoallv(self, send: np.ndarray, send_counts: Sequence[int], recv_counts: Sequence[int]) -> Request:
        if len(send_counts) != 1 or len(recv_counts) != 1 or not send.size == send_counts[0] == recv_counts[0]:
            raise ValueError("alltoallv on one rank takes one chunk of the expected size")
        return Done(np.array(send))

    def bcast(self, value: Any, root: int = 0) -> Any:
        return value

    def barrier(self) -> None:
        pass

    def abort(self, message: str, code: int = EXIT_INTERNAL) -> None:
        _write_stderr(message)
        raise SystemExit(code)


class MPICommunicator(Communicator):
    """K ranks over mpi4py (MPI_COMM_WORLD unless another communicator is given)."""

    spin_s = SPIN_S    # how long a wait polls before it naps (0 on an oversubscribed node)

    def __init__(self, mpi_comm=None, timeout_s: float | None = None):
        super().__init__()
        from mpi4py import MPI

        self._mpi = MPI
        self._comm = mpi_comm if mpi_comm is not None else MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        if timeout_s is None and os.environ.get(TIMEOUT_ENV):
            timeout_s = _seconds_from_env(TIMEOUT_ENV)
        self.timeout_s = timeout_s
        # Who runs where, for the watchdog and for messages that name a failed rank.
        self.peers: list[tuple[int, str]] = self._comm.allgather((os.getpid(), socket.gethostname()))
        host = socket.gethostname()
        if sum(peer_host == host for _, peer_host in self.peers) > usable_cores():
            self.spin_s = 0.0

    # ---- collectives ---------------------------------------------------------------------------

    def iallreduce_sum(self, buf: np.ndarray) -> Request:
        _check_flat(buf, "allreduce_sum")
        self.bytes_sent += 2 * (self.size - 1) * buf.nbytes // self.size
        return _MPIRequest(self, self._comm.Iallreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM),
                           "allreduce", buf)

    def allgather(self, array: np.ndarray) -> np.ndarray:
        send = np.ascontiguousarray(array)
        out = np.empty((self.size,) + send.shape, dtype=send.dtype)
        self._wait(self._comm.Iallgather(send, out), "allgather")
        self.bytes_sent += send.nbytes * (self.size - 1)
        return out

    def iallgatherv(self, array: np.ndarray, counts: Sequence[int]) -> Request:
        send = np.ascontiguousarray(array)
        _check_counts(send, counts, self.rank)
        counts = [int(c) for c in counts]
        out = np.empty(sum(counts), dtype=send.dtype)
        recv = [out, (counts, _displacements(counts)), self._mpi.Datatype.fromcode(send.dtype.char)]
        self.bytes_sent += send.nbytes * (self.size - 1)
        return _MPIRequest(self, self._comm.Iallgatherv(send, recv), "allgatherv", out)

    def ialltoallv(self, send: np.ndarray, send_counts: Sequence[int], recv_counts: Sequence[int]) -> Request:
        if len(send_counts) != self.size or len(recv_counts) != self.size:
            raise ValueError(f"alltoallv takes one chunk and one count per rank ({self.size})")
        send = np.ascontiguousarray(send)
        mpi_type = self._mpi.Datatype.fromcode(send.dtype.char)
        send_counts = [int(c) for c in send_counts]
        recv_counts = [int(c) for c in recv_counts]
        recv = np.empty(sum(recv_counts), dtype=send.dtype)
        self.bytes_sent += (send.size - send_counts[self.rank]) * send.dtype.itemsize
        request = self._comm.Ialltoallv([send, (send_counts, _displacements(send_counts)), mpi_type],
                                        [recv, (recv_counts, _displacements(recv_counts)), mpi_type])
        return _MPIRequest(self, request, "alltoallv", recv)

    def bcast(self, value: Any, root: int = 0) -> Any:
        if isinstance(value, np.ndarray):
            if not value.flags.c_contiguous:
                raise ValueError("bcast needs a contiguous array (it is filled in place)")
            self._wait(self._comm.Ibcast(value, root=root), "bcast")
            if self.rank == root:
                self.bytes_sent += value.nbytes * (self.size - 1)
            return value
        # Objects (rare, never on the hot path): their pickle's length, then the pickle.
        payload = np.frombuffer(pickle.dumps(value), dtype=np.uint8) if self.rank == root else None
        length = np.array([payload.size if payload is not None else 0], dtype=np.int64)
        self.bcast(length, root)
        if payload is None:
            payload = np.empty(int(length[0]), dtype=np.uint8)
        else:
            payload = payload.copy()
        self.bcast(payload, root)
        return value if self.rank == root else pickle.loads(payload.tobytes())

    def barrier(self) -> None:
        self._wait(self._comm.Ibarrier(), "barrier")

    def abort(self, message: str, code: int = EXIT_INTERNAL) -> None:
        _write_stderr(message)
        # MPICH's hydra may tear the job down before it has forwarded this rank's last output
        # (seen in about 1 of 12 aborts): give it a moment to read the message first.
        time.sleep(ABORT_GRACE_S)
        self._comm.Abort(code)
        # MPICH's Abort may return once the launcher was told; this rank must not run on.
        os._exit(code)

    # ---- the watchdog ----------------------------------------------------------------------------

    def _wait(self, request, what: str) -> None:
        """Complete `request`, aborting the job if a local peer dies or the timeout passes.

        Polling (rather than a blocking Wait) keeps Python in control: MPICH busy-polls in Wait as
        well, so the spin costs nothing extra; after it, naps between polls give the core back
        (see the module docstring).
        """
        if request.Test():
            return
        start = time.monotonic()
        next_check = start + LIVENESS_INTERVAL_S
        nap = FIRST_NAP_S
        while not request.Test():
            now = time.monotonic()
            if now - start > self.spin_s:
                time.sleep(nap)
                nap = min(2 * nap, MAX_NAP_S)
            if now >= next_check:
                self._check_peers(what)
                next_check = now + LIVENESS_INTERVAL_S
            if self.timeout_s is not None and now - start > self.timeout_s:
                self.abort(f"netlang: rank {self.rank} of {self.size}: {what} did not complete within "
                           f"{self.timeout_s:g} s; a peer rank has died or hangs", EXIT_INTERNAL)

    def _check_peers(self, what: str) -> None:
        for peer in self.lost_peers():
            pid, host = self.peers[peer]
            self.abort(f"netlang: rank {peer} (pid {pid} on {host}) died; rank {self.rank} was "
                       f"waiting for it in {what}. Aborting all ranks.", EXIT_INTERNAL)

    def lost_peers(self) -> list[int]:
        """Ranks on this host whose process no longer exists (remote ones cannot be checked)."""
        host = socket.gethostname()
        return [peer for peer, (pid, peer_host) in enumerate(self.peers)
                if peer != self.rank and peer_host == host and not _process_alive(pid)]


class _MPIRequest(Request):
    """A non-blocking MPI collective, completed through the communicator's watchdog wait."""

    def __init__(self, comm: MPICommunicator, request, what: str, result):
        self._comm, self._request, self._what, self._result = comm, request, what, result
        self._done = False

    def test(self) -> bool:
        if not self._done:
            self._done = bool(self._request.Test())
        return self._done

    def wait(self):
        if not self._done:
            self._comm._wait(self._request, self._what)
            self._done = True
        return self._result


def _seconds_from_env(name: str) -> float:
    try:
        return float(os.environ[name])
    except ValueError:
        raise ConfigError(f"{name}={os.environ[name]!r} is not a number of seconds",
                          hint=f"set {name} to the seconds a collective may wait, e.g. 600") from None


def _process_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (a killed child its parent has not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) is all we know


def _check_flat(buf: np.ndarray, what: str) -> None:
    if buf.ndim != 1 or not buf.flags.c_contiguous:
        raise ValueError(f"{what} works in place on a contiguous 1-D array, got shape {buf.shape}")


def _check_counts(array: np.ndarray, counts: Sequence[int], rank: int) -> None:
    if array.ndim != 1 or array.size != int(counts[rank]):
        raise ValueError(f"allgatherv: this rank's array has {array.size} elements, counts say "
                         f"{int(counts[rank])}")


def _displacements(counts: Sequence[int]) -> list[int]:
    starts, total = [], 0
    for c in counts:
        starts.append(total)
        total += c
    return starts


def _write_stderr(message: str) -> None:
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - a broken stdout must not stop the abort
        pass
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


MPI_INSTALL_HINT = ("install MPI support with `pip install 'netlang[mpi]'` (mpi4py + mpich) and launch "
                    "the workers with `mpiexec -n K netlang train cfg.net`")


def get_communicator(parallel: bool, span=None, timeout_s: float | None = None) -> Communicator:
    """The communicator for this process.

    Not `parallel` → LocalCommunicator. `parallel` but mpi4py missing → ConfigError saying how to
    install and launch (`span` is where parallel training was asked for). Started by mpiexec with
    more than one rank → MPICommunicator; otherwise (a plain `netlang train`, or `-n 1`) →
    LocalCommunicator.
    """
    from importlib.util import find_spec


    if not parallel:
        return LocalCommunicator()
    if find_spec("mpi4py") is None:
        raise ConfigError("parallel training needs mpi4py, which is not installed", span,
                          hint=MPI_INSTALL_HINT)
    launch = detect_launch()
    if launch is None or launch.size <= 1:
        return LocalCommunicator()
    try:
        _prefer_funneled_threads()
        return MPICommunicator(timeout_s=timeout_s)
    except (ImportError, RuntimeError) as err:  # mpi4py present but no MPI library it can load
        raise ConfigError(f"parallel training could not start MPI: {err}", span,
                          hint=MPI_INSTALL_HINT) from err


def _prefer_funneled_threads() -> None:
    """Only the main thread calls MPI (readers' prefetch threads never do), so ask for
    MPI_THREAD_FUNNELED instead of mpi4py's default MULTIPLE, which costs locking in MPICH."""
    if "mpi4py.MPI" in sys.modules:
        return
    import mpi4py

    mpi4py.rc.thread_level = "funneled"
