"""The backend: everything that depends on where arrays live, NumPy on the CPU or CuPy on a GPU.

The executor, the kernels (through `OpContext.backend`, typed by `ops.registry.ArrayBackend`), the
learners and the trainer reach the array module and these services only through a `Backend`, so
this module is the one place that knows which library runs:

* `xp`, `dtype`, `device`, `name`: the array module, the element type of the run, where it runs;
* `compute`: how matrix products are computed (runtime/precision.py: float, double, bf16, fp16,
  TF32); with bf16/fp16, and always on the GPU, `xp` is a `ComputeModule` whose `matmul` is the
  backend's matrix-product service, so kernels' `xp.matmul` casts as the precision says (and on
  the GPU runs through runtime/gpu/gemm.py's cuBLAS calls, which a CUDA graph can capture);
* `from_host(array, dtype=None)` / `to_host(array)`: copies between host (NumPy) and device;
* `scatter_add(dest, index, values)`: `dest[index] += values` with repeated indices adding up;
* `concatenate(arrays, axis)`;
* `random_stream(seed)`: a generator of the backend's own kind that draws on the device; its
  `state()` goes into checkpoints and `restore(state)` continues from there;
* `array_module(array)` (a function): the module of an array of either kind, for code that is
  handed arrays rather than a backend (the gradient quantiser);
* `synchronize()`: wait for the device's queued work. Arrays stay on the device between steps;
  the trainer reads numbers (and so waits) only where it reports;
* `upload(key, array, dtype=None)`: a minibatch's host array on the device for this step (on a GPU
  staged through pinned memory and copied on a side stream into one of two buffers per `key`, so
  the copy overlaps the previous step; the result stays valid until the upload after next of the
  same key); `upload_scalars(host)`: the same for a learner's per-step scalars.

The CuPy backend also carries the GPU services the kernels use (runtime/gpu/): `kernels`, the
compiled-kernel cache, and `cudnn`, the cuDNN frontend's convolution graphs (None when the frontend
or its library is missing, or `NETLANG_CUDNN=0`: convolutions then run as im2col + GEMM on the GPU,
and the backend says so once on stderr).

`deviceId = -1` (or `cpu`) is NumPy; a GPU index or `auto` selects CuPy when it is importable and a
device is present (`auto` falls back to the CPU, an explicit GPU index is an error without one).
CuPy is imported only when a GPU is asked for.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from dataclasses import replace
from typing import Any

import numpy as np

from netlang.errors import ConfigError
from netlang.launcher import detect_launch
from netlang.runtime.gpu import random as device_random
from netlang.runtime.gpu.capture import CudaGraphs
from netlang.runtime.gpu.cudnn import CudnnService
from netlang.runtime.gpu.gemm import gemm_service
from netlang.runtime.gpu.kernels import KernelCache
from netlang.runtime.gpu.staging import CupyTransfers, StagingRing
from netlang.runtime.precision import ComputeModule, ComputePrecision

# The storage type of parameters and activations per `precision`: bf16 and fp16 keep float32
# master weights and activations and compute their matrix products in 16 bits.
DTYPES = {"float": np.float32, "float32": np.float32, "double": np.float64, "float64": np.float64,
          "bf16": np.float32, "fp16": np.float32}


class Backend:
    """What the NumPy and CuPy backends share; the subclasses fill in the array library."""

    name = ""
    xp: Any = None

    def __init__(self, dtype=np.float32, device: str = "cpu", compute: ComputePrecision | None = None):
        self.dtype = dtype
        self.device = device
        self.compute = compute or ComputePrecision("double" if np.dtype(dtype) == np.float64 else "float")

    def allow_tf32(self, allowed: bool) -> None:
        """`allowTF32`: float32 matrix products may use TF32 tensor cores (GPU; the CPU computes as before)."""
        self.compute = replace(self.compute, allow_tf32=bool(allowed) and self.compute.name == "float")
        gemm = getattr(self, "gemm", None)
        if gemm is not None:
            gemm.compute = self.compute

    def with_dtype(self, dtype) -> Backend:
        """This backend with another element type (the arrays stay where they are)."""
        twin = copy.copy(self)
        twin.dtype = dtype
        return twin

    def from_host(self, array, dtype=None):
        """`array` on this backend's device (a copy unless it is there already), in `dtype` if given."""
        self._host_touch("from_host")
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array) -> np.ndarray:
        raise NotImplementedError

    static_uploads = None     # runtime/stepgraph.StaticUploads while a step is warmed up, captured or replayed
    graphs = None             # the CUDA-graph capture service (runtime/gpu/capture.py), where there is one

    def upload(self, key, array, dtype=None):
        """A minibatch's array on the device for this step (see the module doc); in a captured
        step, the static buffer of `key` (runtime/stepgraph.py)."""
        if self.static_uploads is not None:
            return self.static_uploads.upload(key, array, dtype, self.upload_now)
        return self.upload_now(key, array, dtype)

    def upload_now(self, key, array, dtype=None):
        return self.xp.asarray(array, dtype=dtype)

    def _host_touch(self, what: str) -> None:
        """A host read or write of device data: not allowed inside a captured step."""
        if self.static_uploads is not None:
            self.static_uploads.touched(what)

    def upload_scalars(self, host):
        return self.upload(("scalars",), host)

    def scatter_add(self, dest, index, values) -> None:
        self.xp.add.at(dest, index, values)     # NumPy's ufunc.at; CuPy's (which supersedes cupyx.scatter_add)

    def concatenate(self, arrays, axis: int = 0):
        return self.xp.concatenate(arrays, axis=axis)

    def random_stream(self, seed) -> RandomStream:
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait until the device has finished what was queued (a no-op on the CPU)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({np.dtype(self.dtype).name}, {self.device})"


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def __init__(self, dtype=np.float32, device: str = "cpu", compute: ComputePrecision | None = None):
        super().__init__(dtype, device, compute)
        if self.compute.reduced:    # the products' casts, emulated exactly on the CPU
            self.xp = ComputeModule(np, lambda a, b, out=None: self.compute.matmul(a, b, np, out))

    def to_host(self, array) -> np.ndarray:
        self._host_touch("to_host")
        return np.asarray(array)

    def random_stream(self, seed) -> RandomStream:
        return HostRandom(seed)


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self, cupy, dtype, device: str, cudnn=None, compute: ComputePrecision | None = None):
        super().__init__(dtype, device, compute)
        self.kernels = KernelCache(cupy)
        self.cudnn = cudnn
        self.gemm = gemm_service(cupy, self.compute, self.kernels)    # None: cuBLAS not loadable by ctypes
        if self.gemm is not None:
            self.xp = ComputeModule(cupy, self.gemm.matmul)
        elif self.compute.reduced or self.compute.allow_tf32:
            self.xp = ComputeModule(cupy, lambda a, b, out=None: self.compute.matmul(a, b, cupy, out))
        else:
            self.xp = cupy
        self._staging = StagingRing(CupyTransfers(cupy))
        self.graphs = CudaGraphs(cupy) if self.gemm is not None else None

    def upload_now(self, key, array, dtype=None):
        if not isinstance(array, np.ndarray):
            return self.xp.asarray(array, dtype=dtype)
        return self._staging.upload(key, array, dtype)

    def to_host(self, array) -> np.ndarray:
        self._host_touch("to_host")
        return self.xp.asnumpy(array)

    def random_stream(self, seed) -> RandomStream:
        return DeviceRandom(self.xp, self.kernels, seed)

    def nccl(self):
        """CuPy's NCCL bindings, for the GPU workers' collectives (runtime/distributed/nccl.py)."""
        from cupy.cuda import nccl

        return nccl

    def synchronize(self) -> None:
        self._host_touch("synchronize")
        self.xp.cuda.get_current_stream().synchronize()


def array_module(array):
    """NumPy or CuPy: the module of `array`, for code that works on arrays of either kind (CuPy is
    imported already when a CuPy array exists, so this never imports it)."""
    if type(array).__module__.startswith("cupy"):
        return sys.modules["cupy"]
    return np


# ---- random streams ------------------------------------------------------------------------------

class RandomStream:
    """Uniform and normal draws on the backend's device, and a state for checkpoints."""

    def random(self, shape):
        """Uniform in [0, 1), float64."""
        raise NotImplementedError

    def standard_normal(self, shape, dtype):
        raise NotImplementedError

    def state(self) -> dict:
        raise NotImplementedError

    def restore(self, state: dict) -> None:
        raise NotImplementedError


class HostRandom(RandomStream):
    """NumPy's default generator (PCG64). Its state is a JSON-able dict, so a run resumed from a
    checkpoint draws exactly the numbers the uninterrupted run would have drawn."""

    def __init__(self, seed):
        self._generator = np.random.default_rng(seed)

    def random(self, shape):
        return self._generator.random(shape)

    def standard_normal(self, shape, dtype):
        return self._generator.standard_normal(shape, dtype=dtype)

    def state(self) -> dict:
        return self._generator.bit_generator.state

    def restore(self, state: dict) -> None:
        if state.get("generator") == "counter":     # written by a device stream: continue from its key
            self._generator = np.random.default_rng(_continued_key(state))
        else:
            self._generator.bit_generator.state = state


class DeviceRandom(RandomStream):
    """Counter-based draws on the GPU (runtime/gpu/random.py): every number is a hash of the
    stream's key, a counter in device memory and its index, and the counter is advanced by a kernel.
    A replayed CUDA graph therefore draws new numbers every step, exactly as the eager step does,
    and a checkpoint's key and counter resume the very numbers of the uninterrupted run."""

    def __init__(self, xp, kernels, seed):
        self._xp, self._kernels = xp, kernels
        self._key = device_random.stream_key(seed)
        self._counter = xp.zeros(1, dtype=np.uint64)

    def random(self, shape):
        out = self._xp.empty(shape, dtype=np.float64)
        device_random.draw_uniform(self._kernels, out, self._counter, self._key)
        return out

    def standard_normal(self, shape, dtype):
        out = self._xp.empty(shape, dtype=dtype)
        device_random.draw_normal(self._kernels, out, self._counter, self._key)
        return out

    def state(self) -> dict:
        # Read back only here (checkpoints): replays advance the counter without the host knowing.
        return {"generator": "counter", "key": self._key, "counter": int(self._counter[0])}

    def restore(self, state: dict) -> None:
        if state.get("generator") == "counter":
            self._key, counter = int(state["key"]), int(state["counter"])
        else:                       # a NumPy stream's state (a CPU checkpoint resumed on a GPU)
            self._key, counter = device_random.stream_key(_continued_key(state)), 0
        self._counter[...] = counter


def _continued_key(state: dict) -> list[int]:
    """A generator key for the stream continuing `state`: a device stream's key and counter, or (a
    NumPy state met on a GPU) a hash of the state."""
    if state.get("generator") == "counter":
        key = int(state["key"])
        return [key & 0xFFFFFFFF, key >> 32, int(state["counter"])]
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).digest()
    return [int.from_bytes(digest[:8], "little")]


# ---- choosing a backend --------------------------------------------------------------------------

def _cupy():
    """The cupy module when it imports and sees a CUDA device, else None."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # noqa: BLE001 - any import/driver failure means "no GPU"
        return None
    return None


def gpu_available() -> bool:
    return _cupy() is not None


def cpu_backend(precision: str = "float") -> Backend:
    return NumpyBackend(_dtype(precision), "cpu", _compute(precision, False))


def _dtype(precision):
    dtype = DTYPES.get(str(precision).lower())
    if dtype is None:
        raise ConfigError(f"unknown precision '{precision}'", hint="use 'float', 'double', 'bf16' or 'fp16'")
    return dtype


def _compute(precision, allow_tf32: bool) -> ComputePrecision:
    name = str(precision).lower()
    name = {"float32": "float", "float64": "double"}.get(name, name)
    return ComputePrecision(name, bool(allow_tf32) and name == "float")


def select_backend(device_id="cpu", precision: str = "float", allow_tf32: bool = False) -> Backend:
    dtype = _dtype(precision)
    compute = _compute(precision, allow_tf32)
    dev = str(device_id).lower()
    if dev in ("-1", "cpu", "-1.0"):
        return NumpyBackend(dtype, "cpu", compute)
    cupy = _cupy()
    if dev == "auto":
        if cupy is None:
            return NumpyBackend(dtype, "cpu", compute)
        # One GPU per MPI worker on a node: the worker's local rank picks it.
        launch = detect_launch()
        local_rank = launch.local_rank if launch is not None else 0
        return _on_gpu(cupy, local_rank % max(cupy.cuda.runtime.getDeviceCount(), 1), dtype, compute)
    if cupy is None:
        raise ConfigError(f"deviceId = {device_id} asks for a GPU, but CuPy or a CUDA device is not available",
                          hint="use deviceId = -1 (CPU) or 'auto', or install netlang[gpu] on a machine with a GPU")
    return _on_gpu(cupy, int(float(dev)), dtype, compute)


def _on_gpu(cupy, index: int, dtype, compute: ComputePrecision) -> Backend:
    cupy.cuda.Device(index).use()
    return CupyBackend(cupy, dtype, f"gpu:{index}", _cudnn_service(cupy), compute)


_CUDNN_NOTE: list[str] = []


def _cudnn_service(cupy):
    """The cuDNN frontend's convolution service, or None (said once on stderr, with the reason)."""
    if os.environ.get("NETLANG_CUDNN", "1") == "0":
        reason = "NETLANG_CUDNN=0"
    else:
        try:
            import cudnn

            return CudnnService(cupy, cudnn)
        except Exception as err:  # noqa: BLE001 - a missing frontend or library: run without it
            reason = f"{type(err).__name__}: {err}"
    if not _CUDNN_NOTE:
        _CUDNN_NOTE.append(reason)
        sys.stderr.write(f"netlang: cuDNN is not used ({reason}); convolutions run as im2col + GEMM "
                         "on the GPU (pip install 'netlang[gpu]' brings the cuDNN frontend)\n")
    return None
