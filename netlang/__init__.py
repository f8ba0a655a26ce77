"""netlang: a declarative, config-driven deep-learning training tool speaking BrainScript."""

from netlang.launcher import default_worker_threads

__version__ = "0.1.0"

# First thing, before NumPy is imported anywhere: an MPI worker's BLAS/OpenMP thread counts.
default_worker_threads()

# The Python API (netlang/api.py), imported on first use: every module of the package imports the
# root, and the API sits above all of them.
_API = ("load", "load_text", "load_model", "train", "evaluate")


def __getattr__(name):
    if name in _API:
        from netlang import api

        return getattr(api, name)
    raise AttributeError(f"module 'netlang' has no attribute '{name}'")
