"""Matrix products on the GPU through cuBLAS called directly, so a CUDA graph can capture them.

CuPy 14 refuses every cuBLAS call made while a stream captures (its `setStream` raises
NotImplementedError, reference/gpu.md §2.2), so `cupy.matmul` cannot be part of a captured step.
netlang calls the cuBLAS C API itself, through ctypes, on the library CuPy loads
(`libcublas.so.13`, found by soname or through `cuda.pathfinder`, which CuPy 14 uses to find the
`nvidia-cublas` wheel). The alternatives and why not: nvmath-python's raw bindings make the same
calls but add a dependency; cuTENSOR contractions are capturable inside CuPy but need the cutensor
wheel and allocate a workspace per call; own GEMM kernels would be far slower. The risk of this
choice: a C ABI called without a header (the enum values below are cuBLAS 12/13's), and cuBLAS's
own capture rules, which the service follows as gpu.md §2.4 gives them:

* one handle per device, created (and used once) before any capture;
* `cublasSetStream` then `cublasSetWorkspace` with a preallocated workspace whenever the stream
  changes (setting the stream resets the workspace to cuBLAS's pool, whose allocations a capture
  would record);
* host pointer mode with alpha = 1 and beta = 0, baked into the graph: they never change.

The product is `cublasGemmEx` (`cublasGemmStridedBatchedEx` for batches) on the row-major arrays
read as column-major (C = A·B is Cᵀ = Bᵀ·Aᵀ), with the precision's types: float32 (TF32 tensor cores
with `allowTF32`), float64, bf16 operands into a float32 result, fp16 operands and result (then
widened to float32). bf16 operands are made by `to_bf16`, a rounding kernel that rounds exactly as
runtime/precision.round_to_bf16 does on the CPU. What this service cannot describe (a 1-D operand,
mismatched batch shapes) goes to CuPy's matmul, which a capture refuses: the step then runs eagerly.
"""
from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass

import numpy as np

OP_N, OP_T = 0, 1
R_32F, R_64F, R_16F, R_16BF = 0, 1, 2, 14
COMPUTE_32F, COMPUTE_32F_FAST_TF32, COMPUTE_64F = 68, 77, 70
GEMM_DEFAULT = -1
WORKSPACE_BYTES = 32 << 20
LIBRARY_NAMES = ("libcublas.so.13", "libcublas.so")

TO_BF16 = r"""
// float32 -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN.
extern "C" __global__ void to_bf16(const float* x, unsigned short* y, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x) {
    union { float f; unsigned int u; } v;
    v.f = x[i];
    unsigned int u = v.u;
    if ((u & 0x7fffffffu) > 0x7f800000u) { y[i] = (unsigned short)((u >> 16) | 0x40u); continue; }
    u += 0x7fffu + ((u >> 16) & 1u);
    y[i] = (unsigned short)(u >> 16);
  }
}
"""


@dataclass(frozen=True)
class Stored:
    """How cuBLAS sees one row-major (r, c) matrix: column-major it holds Xᵀ (`transposed`) or X,
    with leading dimension `ld`; `batch_stride` in elements (0: the same matrix for every batch)."""

    transposed: bool
    ld: int
    batch_stride: int


def stored(shape3: tuple, strides3: tuple, itemsize: int) -> Stored | None:
    """The cuBLAS view of a (batch, r, c) array with byte strides `strides3`, or None when its
    matrices are neither row- nor column-contiguous (the caller copies it first)."""
    _, r, c = shape3
    s_batch, s_row, s_col = (s // itemsize for s in strides3)
    if (c == 1 or s_col == 1) and (r == 1 or s_row == c):
        return Stored(True, max(c, 1), s_batch)
    if (r == 1 or s_row == 1) and (c == 1 or s_col == r):
        return Stored(False, max(r, 1), s_batch)
    return None


@dataclass(frozen=True)
class GemmCall:
    """The arguments of one cublasGemm(StridedBatched)Ex call for C = A·B, row-major."""

    transa: int
    transb: int
    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int
    stride_a: int
    stride_b: int
    stride_c: int
    batch: int


def gemm_call(a: Stored, b: Stored, m: int, n: int, k: int, batch: int) -> GemmCall:
    """Cᵀ (n×m, column-major, ld n) = Bᵀ·Aᵀ: cuBLAS's first operand is B, its second A."""
    return GemmCall(OP_N if b.transposed else OP_T, OP_N if a.transposed else OP_T, n, m, k,
                    b.ld, a.ld, n, b.batch_stride, a.batch_stride, m * n, batch)


def _batched(x, batch_shape: tuple, xp):
    """x as (batch, r, c): a 2-D matrix is shared by every batch (stride 0)."""
    if x.ndim == 2:
        return x.reshape((1,) + x.shape), True
    if tuple(x.shape[:-2]) != batch_shape:
        return None, False
    flat = x.reshape((-1,) + x.shape[-2:])
    return flat, False


class CublasGemm:
    """`matmul(a, b, out=None)` on CuPy arrays through cuBLAS (see the module doc)."""

    def __init__(self, cupy, library, compute, kernels, pointer=None):
        self._cupy = cupy
        self._lib = library
        self.compute = compute
        self._kernels = kernels
        self._pointer = pointer or (lambda array: array.data.ptr)
        self._handle = ctypes.c_void_p()
        self._check(self._lib.cublasCreate_v2(ctypes.byref(self._handle)), "cublasCreate")
        self._workspace = cupy.empty(WORKSPACE_BYTES, dtype=np.uint8)
        self._stream = None
        self.fallbacks = 0            # products handed to CuPy (not capturable)

    # ---- the product ------------------------------------------------------------------------
    def matmul(self, a, b, out=None):
        xp = self._cupy
        if a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
            return self._library_matmul(a, b, out)
        batch_shape = tuple(a.shape[:-2]) if a.ndim > 2 else tuple(b.shape[:-2])
        a3, a_shared = _batched(a, batch_shape, xp)
        b3, b_shared = _batched(b, batch_shape, xp)
        if a3 is None or b3 is None or a.shape[-1] != b.shape[-2]:
            return self._library_matmul(a, b, out)
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        batch = int(np.prod(batch_shape)) if batch_shape else 1
        a3, a_view = self._operand(a3, a_shared)
        b3, b_view = self._operand(b3, b_shared)
        result_type = np.float64 if a.dtype == np.float64 else np.float32
        c3 = xp.empty((batch, m, n), dtype=np.float16 if self.compute.name == "fp16" else result_type)
        if m and n:
            self._run(gemm_call(a_view, b_view, m, n, k, batch), a3, b3, c3, a.dtype)
        c = c3.reshape(batch_shape + (m, n))
        if c.dtype != result_type:
            c = c.astype(result_type)
        if out is None:
            return c
        out[...] = c
        return out

    def _operand(self, x3, shared: bool):
        x3 = self._cast(x3)
        view = stored(x3.shape, x3.strides, x3.itemsize)
        if view is None:
            x3 = self._cupy.ascontiguousarray(x3)
            view = stored(x3.shape, x3.strides, x3.itemsize)
        if shared:
            view = Stored(view.transposed, view.ld, 0)
        return x3, view

    def _cast(self, x3):
        """The operand in the product's input type (bf16 as 16-bit patterns in uint16)."""
        if self.compute.name == "fp16":
            return x3.astype(np.float16)
        if self.compute.name != "bf16":
            return x3
        source = self._cupy.ascontiguousarray(x3, dtype=np.float32)
        bits = self._cupy.empty(source.shape, dtype=np.uint16)
        self._kernels.launch(TO_BF16, "to_bf16", np.float32, source.size, (source, bits, np.int64(source.size)))
        return bits

    def _types(self, dtype):
        """(operand type, result type, compute type, alpha/beta C type)."""
        if np.dtype(dtype) == np.float64:
            return R_64F, R_64F, COMPUTE_64F, ctypes.c_double
        if self.compute.name == "bf16":
            return R_16BF, R_32F, COMPUTE_32F, ctypes.c_float
        if self.compute.name == "fp16":
            return R_16F, R_16F, COMPUTE_32F, ctypes.c_float
        return R_32F, R_32F, COMPUTE_32F_FAST_TF32 if self.compute.allow_tf32 else COMPUTE_32F, ctypes.c_float

    def _run(self, call: GemmCall, a3, b3, c3, dtype) -> None:
        self._bind_stream()
        operand, result, compute, scalar = self._types(dtype)
        alpha, beta = scalar(1.0), scalar(0.0)
        ptr = self._pointer
        common = [self._handle, ctypes.c_int(call.transa), ctypes.c_int(call.transb), ctypes.c_int(call.m),
                  ctypes.c_int(call.n), ctypes.c_int(call.k), ctypes.byref(alpha)]
        if call.batch == 1:
            status = self._lib.cublasGemmEx(
                *common, ctypes.c_void_p(ptr(b3)), ctypes.c_int(operand), ctypes.c_int(call.lda),
                ctypes.c_void_p(ptr(a3)), ctypes.c_int(operand), ctypes.c_int(call.ldb), ctypes.byref(beta),
                ctypes.c_void_p(ptr(c3)), ctypes.c_int(result), ctypes.c_int(call.ldc), ctypes.c_int(compute),
                ctypes.c_int(GEMM_DEFAULT))
            self._check(status, "cublasGemmEx")
            return
        status = self._lib.cublasGemmStridedBatchedEx(
            *common, ctypes.c_void_p(ptr(b3)), ctypes.c_int(operand), ctypes.c_int(call.lda),
            ctypes.c_longlong(call.stride_a), ctypes.c_void_p(ptr(a3)), ctypes.c_int(operand), ctypes.c_int(call.ldb),
            ctypes.c_longlong(call.stride_b), ctypes.byref(beta), ctypes.c_void_p(ptr(c3)), ctypes.c_int(result),
            ctypes.c_int(call.ldc), ctypes.c_longlong(call.stride_c), ctypes.c_int(call.batch),
            ctypes.c_int(compute), ctypes.c_int(GEMM_DEFAULT))
        self._check(status, "cublasGemmStridedBatchedEx")

    def _bind_stream(self) -> None:
        stream = self._cupy.cuda.get_current_stream().ptr
        if stream == self._stream:
            return
        self._check(self._lib.cublasSetStream_v2(self._handle, ctypes.c_void_p(stream)), "cublasSetStream")
        # After the stream: setting it resets the workspace (gpu.md §2.4).
        self._check(self._lib.cublasSetWorkspace_v2(self._handle, ctypes.c_void_p(self._pointer(self._workspace)),
                                                    ctypes.c_size_t(WORKSPACE_BYTES)), "cublasSetWorkspace")
        self._stream = stream

    def _library_matmul(self, a, b, out):
        self.fallbacks += 1
        return self.compute.matmul(a, b, self._cupy, out)

    @staticmethod
    def _check(status, what: str) -> None:
        if int(status) != 0:
            raise RuntimeError(f"{what} failed with cuBLAS status {int(status)}")


_GEMM_NOTE: list[str] = []


def load_cublas():
    """The cuBLAS library through ctypes, or None."""
    for name in LIBRARY_NAMES:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    try:
        from cuda import pathfinder

        return ctypes.CDLL(pathfinder.load_nvidia_dynamic_lib("cublas").abs_path)
    except Exception:  # noqa: BLE001 - no wheel, no pathfinder: no direct cuBLAS
        return None


def gemm_service(cupy, compute, kernels):
    """The CuPy backend's matrix products: CublasGemm, or None (said once on stderr) when cuBLAS
    cannot be loaded, in which case products use CuPy's matmul and steps are not captured."""
    library = load_cublas()
    if library is not None:
        try:
            return CublasGemm(cupy, library, compute, kernels)
        except Exception as err:  # noqa: BLE001
            reason = f"{type(err).__name__}: {err}"
    else:
        reason = "libcublas was not found"
    if not _GEMM_NOTE:
        _GEMM_NOTE.append(reason)
        sys.stderr.write(f"netlang: cuBLAS is not called directly ({reason}); matrix products use CuPy's "
                         "matmul, and training steps run without CUDA graphs\n")
    return None
