"""netlang: a declarative, config-driven deep-learning training tool speaking BrainScript."""

from netlang.launcher import default_worker_threads

__version__ = "0.1.0"

# First thing, before NumPy is imported anywhere: an MPI worker's BLAS/OpenMP thread counts.
default_worker_threads()


def load(path, overrides=(), precision=None, device="cpu"):
    """Load a config: `netlang.load("cfg.net").network("train").forward({...})` (see netlang.api)."""
    from netlang.api import load as _load

    return _load(path, overrides, precision, device)
