"""Run under `mpiexec -n 2`: rank 1 fails in the way named by argv[1]; rank 0 waits in a collective.

    raise   rank 1 raises a RuntimeError outside any guard (the excepthook must abort the job)
    config  rank 1 raises a ConfigError inside failure_guard (the job must exit with 78)
    kill    rank 1 SIGKILLs itself (the launcher or the watchdog must end the job)

Without the failure handling each case hangs: rank 0 would wait in the all-reduce forever.
"""
import os
import signal
import sys

import numpy as np

from netlang.errors import ConfigError
from netlang.runtime.distributed import failure_guard, get_communicator, install_failure_handlers


def fail(how: str) -> None:
    if how == "raise":
        raise RuntimeError("simulated failure on this rank")
    if how == "config":
        raise ConfigError("simulated bad configuration", key="SGD")
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def main(how: str) -> None:
    comm = get_communicator(True)
    install_failure_handlers(comm)
    buf = np.ones(4)
    comm.allreduce_sum(buf)  # everybody is up
    if how == "raise":
        if comm.rank == 1:
            fail(how)
        comm.allreduce_sum(buf)
    else:
        with failure_guard(comm):
            if comm.rank == 1:
                fail(how)
            comm.allreduce_sum(buf)
    print(f"rank {comm.rank} finished", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
