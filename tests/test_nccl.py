"""The NCCL communicator's bootstrap and call plumbing, with stand-ins for CuPy and NCCL (the real
thing runs in benchmarks/gpu/device_check.sh, with K = 1 on one GPU)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from netlang.actions.train import gpu_workers_communicator
from netlang.launcher import detect_launch
from netlang.runtime.backend import cpu_backend
from netlang.runtime.distributed import LocalCommunicator
from netlang.runtime.distributed.nccl import NcclCommunicator, local_device


class DeviceArray:
    """A host array posing as a CuPy array: `.data.ptr` names it in the fake NCCL's registry."""

    registry: dict = {}

    def __init__(self, values):
        self.values = np.asarray(values)
        self.data = SimpleNamespace(ptr=id(self))
        DeviceArray.registry[id(self)] = self

    size = property(lambda self: self.values.size)
    nbytes = property(lambda self: self.values.nbytes)
    dtype = property(lambda self: self.values.dtype)


class Event:
    def __init__(self, **_):
        self.recorded_on = None

    def record(self, stream):
        self.recorded_on = stream

    def query(self):
        return True


class Stream:
    def __init__(self, non_blocking=False):
        self.ptr = id(self)
        self.waited = []

    def wait_event(self, event):
        self.waited.append(event)


def fake_modules(devices=2):
    compute = Stream()
    used = []
    cuda = SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=lambda: devices),
                           Device=lambda i: SimpleNamespace(use=lambda: used.append(i)),
                           Stream=Stream, Event=Event, get_current_stream=lambda: compute)
    calls = []

    class Communicator:
        def __init__(self, size, uid, rank):
            calls.append(("init", size, uid, rank))

        def allReduce(self, send, recv, count, dtype, op, stream):
            calls.append(("allReduce", send == recv, count, dtype, op, stream))

    nccl = SimpleNamespace(get_unique_id=lambda: "uid-0", NcclCommunicator=Communicator, NCCL_FLOAT32="f32",
                           NCCL_FLOAT64="f64", NCCL_SUM="sum")
    return SimpleNamespace(cuda=cuda), nccl, calls, used, compute


def test_a_rank_uses_the_gpu_of_its_local_rank():
    assert [local_device(r, 2) for r in range(4)] == [0, 1, 0, 1]


def test_bootstrap_broadcasts_the_unique_id_and_all_reduces_in_place_on_a_side_stream():
    cupy, nccl, calls, used, compute = fake_modules()
    comm = NcclCommunicator(LocalCommunicator(), cupy, nccl, local_rank=1)
    assert used == [1] and calls == [("init", 1, "uid-0", 0)]
    grad = DeviceArray(np.ones(10, dtype=np.float32))
    request = comm.iallreduce_sum(grad)
    assert calls[-1] == ("allReduce", True, 10, "f32", "sum", comm.stream.ptr)
    assert comm.stream.waited and comm.stream.waited[0].recorded_on is compute    # after the compute stream
    assert request.test() and request.wait() is grad
    assert compute.waited[-1].recorded_on is comm.stream                          # the update waits for it
    host = np.ones(3)
    comm.allreduce_sum(host)                   # host arrays go through MPI
    assert len([c for c in calls if c[0] == "allReduce"]) == 1


class TwoWorkers(LocalCommunicator):
    """The MPI side of a job of two, as `gpu_workers_communicator` sees it."""

    size = 2


def test_gpu_workers_exchange_through_nccl_and_cpu_workers_through_mpi(monkeypatch):
    mpi = TwoWorkers()
    assert gpu_workers_communicator(mpi, cpu_backend()) is mpi
    alone = LocalCommunicator()
    assert gpu_workers_communicator(alone, SimpleNamespace(name="cupy")) is alone
    cupy, nccl, calls, used, _ = fake_modules(devices=2)
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("MPI_LOCALRANKID", "1")
    gpu = SimpleNamespace(name="cupy", xp=cupy, nccl=lambda: nccl)
    comm = gpu_workers_communicator(mpi, gpu)
    assert isinstance(comm, NcclCommunicator) and comm.device_buffers and used == [1]


def test_the_launchers_local_rank_or_the_rank_modulo_the_ranks_on_the_node():
    assert detect_launch({"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1"}).local_rank == 1
    assert detect_launch({"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"}).local_rank == 1
    assert detect_launch({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4",
                          "OMPI_COMM_WORLD_LOCAL_RANK": "0"}).local_rank == 0
