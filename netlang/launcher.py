"""What an MPI launcher tells a process through its environment, and the thread counts that follow.

    detect_launch() -> LaunchInfo | None    rank, size and local ranks, from the environment only
    cores_per_worker() -> int               the cores one process may keep busy
    default_worker_threads()                BLAS/OpenMP thread counts for an MPI worker (see below)

This module imports nothing but the standard library: the package root calls
`default_worker_threads()` when it is imported, which is before NumPy loads its BLAS in every way
netlang starts (the `netlang` console script, `python -m netlang`, the Python API). OpenBLAS, MKL
and OpenMP read their thread counts once, when the library loads, so this is the one point where
setting them through the environment works.

Why: each of K workers on a node would otherwise start a BLAS thread per core, K times as many
threads as cores, and a data-parallel step waits for the slowest worker; on a 2-core machine two
workers ran 20-30 times slower than one process. A worker started by a launcher therefore gets
(cores it may use) / (ranks on its node) threads, at least one, unless the user has set any of the
variables (then they are all left as they are). threadpoolctl could change the counts after the
libraries are loaded, but it is not needed where the environment is read first, and netlang does
not take on a dependency for it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# Environment variables launchers set for every process: (rank variable, size variable).
LAUNCHER_VARIABLES = (
    ("PMI_RANK", "PMI_SIZE"),                            # MPICH hydra, Intel MPI, slurm --mpi=pmi2
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),    # Open MPI
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),      # MVAPICH2
)
# The number of ranks on this process's node.
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS",               # MPICH hydra, Intel MPI
                        "OMPI_COMM_WORLD_LOCAL_SIZE",    # Open MPI
                        "MV2_COMM_WORLD_LOCAL_SIZE")     # MVAPICH2
# This process's rank among those on its node.
LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID",                 # MPICH hydra, Intel MPI
                        "OMPI_COMM_WORLD_LOCAL_RANK",      # Open MPI
                        "MV2_COMM_WORLD_LOCAL_RANK")       # MVAPICH2
# What the numeric libraries read for their thread pools.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class LaunchInfo:
    rank: int
    size: int
    launcher: str     # the variable that told us, e.g. "PMI_RANK"
    local_size: int   # ranks on this node (all `size` when the launcher does not say)
    local_rank: int = 0   # this rank among them (rank mod local_size when the launcher does not say)


def detect_launch(environ=None) -> LaunchInfo | None:
    """Rank and size if this process was started by an MPI launcher, else None.

    Reads the environment only, so it is cheap and does not initialise MPI (importing mpi4py.MPI
    would, and would start a singleton MPI job in a plain `netlang train`).
    """
    env = os.environ if environ is None else environ
    for rank_var, size_var in LAUNCHER_VARIABLES:
        if rank_var in env and size_var in env:
            try:
                rank, size = int(env[rank_var]), int(env[size_var])
            except ValueError:
                continue
            local_size = _local_size(env, size)
            return LaunchInfo(rank, size, rank_var, local_size, _local_rank(env, rank, local_size))
    return None


def _local_rank(env, rank: int, local_size: int) -> int:
    for name in LOCAL_RANK_VARIABLES:
        try:
            return max(0, int(env[name]))
        except (KeyError, ValueError):
            continue
    return rank % local_size


def _local_size(env, size: int) -> int:
    for name in LOCAL_SIZE_VARIABLES:
        try:
            return max(1, int(env[name]))
        except (KeyError, ValueError):
            continue
    return size


def usable_cores() -> int:
    """The logical CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        return os.cpu_count() or 1


def cores_per_worker(environ=None) -> int:
    """The cores one process may keep busy: all usable cores for a process alone, the node's share
    (usable cores / ranks on the node, at least one) for an MPI worker. A launcher that binds each
    rank to several cores of its own is better served by setting OMP_NUM_THREADS itself."""
    cores = usable_cores()
    launch = detect_launch(environ)
    if launch is None or launch.local_size <= 1:
        return cores
    return max(1, cores // launch.local_size)


def default_worker_threads(environ=None) -> int | None:
    """Give an MPI worker's BLAS/OpenMP pools `cores_per_worker()` threads, unless the user chose.

    Returns the count set, or None when nothing was set (not a worker of several, or a thread
    variable is already in the environment)."""
    env = os.environ if environ is None else environ
    launch = detect_launch(env)
    if launch is None or launch.size <= 1 or any(name in env for name in THREAD_VARIABLES):
        return None
    threads = cores_per_worker(env)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    return threads
