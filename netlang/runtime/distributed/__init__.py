"""Data-parallel training over MPI: the building blocks the trainer uses.

    comm = get_communicator(parallel)           # LocalCommunicator (K = 1) or MPICommunicator
    install_failure_handlers(comm)              # a failing rank ends the job, never hangs it
    with failure_guard(comm): ...               # around the training body
    GradientAggregator(comm, segments, size, dtype, bits)   # DataParallelSGD (32-bit or k-bit)
    BlockMomentum(comm, params, block_size, ...)             # BlockMomentumSGD (BMUF)
    ModelAveraging(comm, params, block_size)                 # ModelAveragingSGD

Formulas: reference/gpu.md §5.5 (k-bit quantisation with error feedback) and §5.6 (BMUF).
Importing this package does not import mpi4py; only `get_communicator` does, when it is needed.
"""
from netlang.launcher import detect_launch
from netlang.runtime.distributed.aggregation import GradientAggregator
from netlang.runtime.distributed.blockmomentum import BlockMomentum, ModelAveraging, resolve_block_size
from netlang.runtime.distributed.comm import Communicator, LocalCommunicator, MPICommunicator, get_communicator
from netlang.runtime.distributed.launch import failure_guard, install_failure_handlers

__all__ = [
    "BlockMomentum", "Communicator", "GradientAggregator", "LocalCommunicator", "MPICommunicator",
    "ModelAveraging", "detect_launch", "failure_guard", "get_communicator",
    "install_failure_handlers", "resolve_block_size",
]
