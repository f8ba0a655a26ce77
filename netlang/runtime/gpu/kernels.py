"""Compiled CUDA kernels, built once per source and element type and launched over flat buffers.

The CuPy backend's `kernels` service. Op modules and learners keep their CUDA sources next to the
NumPy code they mirror and ask this cache for the compiled kernel:

* `launch(source, name, dtype, count, args)`: a `RawKernel` whose body is a grid-stride loop over
  `count` items (every kernel in netlang is written that way, so any grid covers the work and one
  thread per block would too, which is how the CPU tests run the same source); the source gets
  `typedef <float|double> T;` in front, so one text serves both precisions;
* `elementwise(in_params, out_params, operation, name)` and `reduction(...)`: CuPy's
  ElementwiseKernel / ReductionKernel (broadcasting, axes) built once per definition;
* `constant(key, host_array)`: a small device array (window geometry, segment tables) uploaded once.

Kernels take scalars that change between steps from device buffers, not as baked launch
arguments, so a later CUDA-graph capture can replay them (reference/gpu.md §2.3).
"""
from __future__ import annotations

import hashlib

import numpy as np

# Threads per block, and the most blocks a grid-stride launch asks for (enough to fill a large GPU).
BLOCK = 256
MAX_BLOCKS = 65536

C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def c_type(dtype) -> str:
    """The C name of a float dtype (the `T` of a kernel source)."""
    try:
        return C_TYPES[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"GPU kernels run on float32 or float64, not {np.dtype(dtype)}") from None


def typed_source(source: str, dtype) -> str:
    """`source` with its element type `T` defined."""
    return f"typedef {c_type(dtype)} T;\n{source}"


def source_key(source: str, *more) -> str:
    """A cache key naming a kernel by the hash of its text (and anything else that selects it)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    return ":".join([digest] + [str(m) for m in more])


def grid_for(count: int, block: int = BLOCK) -> int:
    """Blocks for a grid-stride loop over `count` items."""
    return max(1, min(MAX_BLOCKS, -(-int(count) // block)))


def scalar_arg(value, dtype):
    """A launch argument of C type `T` (CuPy passes NumPy scalars by their exact type)."""
    return np.dtype(dtype).type(value)


class KernelCache:
    """Kernels compiled on first use and kept for the life of the backend."""

    def __init__(self, cupy):
        self._cupy = cupy
        self._raw: dict[str, object] = {}
        self._elementwise: dict[tuple, object] = {}
        self._reduction: dict[tuple, object] = {}
        self._constants: dict[tuple, object] = {}

    def raw(self, source: str, name: str, dtype):
        key = source_key(source, name, c_type(dtype))
        kernel = self._raw.get(key)
        if kernel is None:
            # No fused multiply-add contraction: the kernels round where NumPy rounds, so the
            # learners' numbers match the CPU's to the last bit wherever the order of work does.
            kernel = self._raw[key] = self._cupy.RawKernel(typed_source(source, dtype), name,
                                                           options=("--fmad=false",))
        return kernel

    def launch(self, source: str, name: str, dtype, count: int, args: tuple, block: int = BLOCK) -> None:
        """Run kernel `name` of `source` over `count` items (a grid-stride loop inside)."""
        if count <= 0:
            return
        self.raw(source, name, dtype)((grid_for(count, block),), (block,), args)

    def launch_blocks(self, source: str, name: str, dtype, blocks: int, args: tuple, block: int = BLOCK) -> None:
        """Run kernel `name` with one block per item (`blocks` of them): per-segment reductions."""
        if blocks <= 0:
            return
        self.raw(source, name, dtype)((int(blocks),), (block,), args)

    def elementwise(self, in_params: str, out_params: str, operation: str, name: str, preamble: str = ""):
        key = (in_params, out_params, operation, name, preamble)
        kernel = self._elementwise.get(key)
        if kernel is None:
            kernel = self._elementwise[key] = self._cupy.ElementwiseKernel(
                in_params, out_params, operation, name, preamble=preamble)
        return kernel

    def reduction(self, in_params: str, out_params: str, map_expr: str, reduce_expr: str, post_map_expr: str,
                  identity: str, name: str):
        key = (in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name)
        kernel = self._reduction.get(key)
        if kernel is None:
            kernel = self._reduction[key] = self._cupy.ReductionKernel(
                in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name)
        return kernel

    def constant(self, key: tuple, host_array: np.ndarray):
        """`host_array` on the device, uploaded the first time `key` is asked for."""
        array = self._constants.get(key)
        if array is None:
            array = self._constants[key] = self._cupy.asarray(host_array)
        return array

    def __len__(self) -> int:
        return len(self._raw) + len(self._elementwise) + len(self._reduction)
