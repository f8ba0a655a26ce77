"""Run under `mpiexec -n 2`: `netlang train`, counting the collectives each worker starts.

    python count_collectives.py OUT_PREFIX -- netlang train arguments ...

Every rank writes {"collectives": N, "steps": M} to OUT_PREFIX.rank<r>.json: the collectives it
started through the communicator (blocking or not) and the training steps it took.
"""
import json
import sys

from netlang.cli import main
from netlang.runtime.distributed.comm import MPICommunicator
from netlang.runtime.trainer import Trainer

COLLECTIVES = ("iallreduce_sum", "iallgatherv", "ialltoallv", "allgather", "bcast", "barrier")
counts = {"collectives": 0, "steps": 0}


def counted(function, key):
    def wrapper(*args, **kwargs):
        counts[key] += 1
        return function(*args, **kwargs)
    return wrapper


if __name__ == "__main__":
    prefix, separator, *argv = sys.argv[1:]
    assert separator == "--", "usage: OUT_PREFIX -- train arguments"
    for name in COLLECTIVES:
        setattr(MPICommunicator, name, counted(getattr(MPICommunicator, name), "collectives"))
    Trainer.step = counted(Trainer.step, "steps")
    code = main(argv)
    from mpi4py import MPI

    with open(f"{prefix}.rank{MPI.COMM_WORLD.Get_rank()}.json", "w") as fh:
        json.dump(counts, fh)
    sys.exit(code)
