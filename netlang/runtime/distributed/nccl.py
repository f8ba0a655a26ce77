"""NCCL for GPU buffers behind the communicator interface (distributed/comm.py), bootstrapped by MPI.

`NcclCommunicator(mpi_comm, cupy, nccl)` is a `Communicator` whose collectives on CuPy arrays run
through NCCL (reference/gpu.md §5.3) and whose host-side calls (pickled broadcasts, barriers,
aborts, NumPy arrays) go to the MPI communicator it was bootstrapped from:

* bootstrap: rank 0 makes the unique id (`nccl.get_unique_id()`), MPI broadcasts it, every rank uses
  the GPU of its local rank (`launch.local_rank`: one GPU per rank on each host) and joins
  `nccl.NcclCommunicator(K, uid, rank)`;
* `allreduce_sum(buf)` on a flat CuPy buffer: `allReduce` in place, on a side stream ordered after
  the compute stream by an event, the compute stream waiting for it in turn — stream-ordered, no
  host synchronisation, so the same call can sit inside a captured step (NCCL >= 2.9 supports
  graphs; CuPy lets NCCL calls be captured);
* `iallreduce_sum(buf) -> NcclRequest`: the same started on the side stream; `test()` queries its
  event, `wait()` makes the compute stream wait for it. This is the non-blocking form the bucketed
  gradient exchange (issue 17's `GradientAggregator.begin / segment_ready / finish`) starts per
  bucket as backward finishes it: a bucket's all-reduce then overlaps the backward of the layers
  before it, and `finish` waits before the update;
* `allgather`, `bcast` of arrays: NCCL's allGather and broadcast; everything else MPI.

1-bit SGD and block momentum keep working on GPU buffers: their exchanges are all-reduces,
all-gathers and broadcasts of arrays, which this class serves on the device (and through MPI for
what the quantiser packs on the host). `bytes_sent` counts as the MPI communicator does.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from netlang.runtime.distributed.comm import Communicator

NCCL_TYPES = {np.dtype(np.float32): "NCCL_FLOAT32", np.dtype(np.float64): "NCCL_FLOAT64",
              np.dtype(np.float16): "NCCL_FLOAT16", np.dtype(np.int32): "NCCL_INT32",
              np.dtype(np.int64): "NCCL_INT64", np.dtype(np.uint8): "NCCL_UINT8"}


def local_device(local_rank: int, devices: int) -> int:
    """The GPU of a rank: its local rank on the host (ranks beyond the GPUs share round robin)."""
    return local_rank % max(devices, 1)


class NcclRequest:
    """An all-reduce in flight on the communicator's stream."""

    def __init__(self, comm: NcclCommunicator, event, result):
        self._comm, self._event, self._result = comm, event, result

    def test(self) -> bool:
        return bool(self._event.query())

    def wait(self):
        self._comm.cupy.cuda.get_current_stream().wait_event(self._event)
        return self._result


class NcclCommunicator(Communicator):
    device_buffers = True      # its collectives take CuPy arrays where they are (host arrays go to MPI)

    def __init__(self, mpi_comm: Communicator, cupy, nccl, local_rank: int = 0):
        super().__init__()
        self.mpi = mpi_comm
        self.cupy = cupy
        self.nccl = nccl
        self.rank, self.size = mpi_comm.rank, mpi_comm.size
        self.device = local_device(local_rank, cupy.cuda.runtime.getDeviceCount())
        cupy.cuda.Device(self.device).use()
        uid = nccl.get_unique_id() if mpi_comm.rank == 0 else None
        uid = mpi_comm.bcast(uid, 0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    # ---- device collectives --------------------------------------------------------------------
    def _on_device(self, array) -> bool:
        return not isinstance(array, np.ndarray)

    def _type(self, array):
        return getattr(self.nccl, NCCL_TYPES[np.dtype(array.dtype)])

    def _after_compute(self):
        event = self.cupy.cuda.Event(disable_timing=True)
        event.record(self.cupy.cuda.get_current_stream())
        self.stream.wait_event(event)

    def _done_event(self):
        event = self.cupy.cuda.Event(disable_timing=True)
        event.record(self.stream)
        return event

    def iallreduce_sum(self, buf) -> NcclRequest:
        if not self._on_device(buf):
            self.mpi.allreduce_sum(buf)
            return _Done(buf)
        self._after_compute()
        self.comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._type(buf), self.nccl.NCCL_SUM, self.stream.ptr)
        self.bytes_sent += 2 * (self.size - 1) * buf.nbytes // self.size
        return NcclRequest(self, self._done_event(), buf)

    def allreduce_sum(self, buf) -> None:
        self.iallreduce_sum(buf).wait()

    def allgather(self, array):
        if not self._on_device(array):
            return self.mpi.allgather(array)
        send = self.cupy.ascontiguousarray(array)
        out = self.cupy.empty((self.size,) + tuple(send.shape), dtype=send.dtype)
        self._after_compute()
        self.comm.allGather(send.data.ptr, out.data.ptr, send.size, self._type(send), self.stream.ptr)
        self.bytes_sent += send.nbytes * (self.size - 1)
        NcclRequest(self, self._done_event(), out).wait()
        return out

    def bcast(self, value: Any, root: int = 0) -> Any:
        if not self._on_device(value) or not hasattr(value, "data"):
            return self.mpi.bcast(value, root)
        self._after_compute()
        self.comm.bcast(value.data.ptr, value.size, self._type(value), root, self.stream.ptr)
        if self.rank == root:
            self.bytes_sent += value.nbytes * (self.size - 1)
        NcclRequest(self, self._done_event(), value).wait()
        return value

    # ---- host collectives: MPI -------------------------------------------------------------------
    def allgatherv(self, array, counts: Sequence[int]):
        return self.mpi.allgatherv(array, counts)

    def alltoallv(self, chunks, recv_counts: Sequence[int]):
        return self.mpi.alltoallv(chunks, recv_counts)

    def barrier(self) -> None:
        self.mpi.barrier()

    def abort(self, message: str, code: int = 70) -> None:
        self.mpi.abort(message, code)


class _Done:
    def __init__(self, result):
        self.result = result

    def test(self) -> bool:
        return True

    def wait(self):
        return self.result
