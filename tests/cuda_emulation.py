"""Run the project's CUDA kernel sources on the CPU, to test them without a GPU.

Every kernel in netlang is a grid-stride loop (or one block per segment whose threads stride over
it), so a single thread per block computes the same result as a full launch, only slower. This
module compiles a kernel source as plain C++ with g++, behind a small header that defines CUDA's
launch variables and qualifiers for one thread per block, and runs it over NumPy buffers through
ctypes. `EmulatedKernels` has the interface of runtime/gpu/kernels.KernelCache (launch,
launch_blocks, elementwise, reduction, constant), so the GPU code paths of the ops and learners
run here on NumPy arrays, exactly as written for CuPy apart from the array library.

`nvcc_compiles(source)` checks a source with the real CUDA compiler (where one is installed): the
emulation proves the arithmetic, nvcc that the text is valid CUDA.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from netlang.runtime.gpu.kernels import BLOCK, c_type, grid_for, typed_source

SHIM = r"""
#include <cmath>
#include <cstdint>
#include <cfloat>
#include <algorithm>
#include <cstring>
// NVRTC, which compiles the kernels on a GPU, has no host headers: keep their macros out here too.
#undef INFINITY
#undef NAN
#undef HUGE_VAL
#undef HUGE_VALF
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
static inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, sizeof d); return d; }
struct emu_dim3 { unsigned int x, y, z; };
static emu_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
extern "C" void emu_set_block(unsigned int b, unsigned int g) { blockIdx.x = b; gridDim.x = g; }
#define __global__
#define __device__ static inline
#define __forceinline__
#define __shared__ static
#define __restrict__
static inline void __syncthreads() {}
template <typename V> static inline V atomicAdd(V* a, V v) { V old = *a; *a += v; return old; }
using std::min; using std::max; using std::sqrt; using std::exp; using std::tanh; using std::log;
using std::fabs; using std::floor; using std::ceil; using std::sin; using std::cos; using std::expm1;
using std::log1p; using std::isnan; using std::isinf;
"""

_CACHE = os.path.join(tempfile.gettempdir(), f"netlang-cuda-emulation-{os.getuid()}")
_LIBS: dict[str, ctypes.CDLL] = {}


def have_gxx() -> bool:
    return shutil.which("g++") is not None


def nvcc_path() -> str | None:
    found = shutil.which("nvcc")
    return found or (("/usr/local/cuda/bin/nvcc") if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


def nvcc_compiles(source: str, dtype=np.float32, arch: str = "sm_90") -> str:
    """'' when nvcc compiles the typed source for `arch`, else its error output."""
    os.makedirs(_CACHE, exist_ok=True)
    text = typed_source(source, dtype)
    path = os.path.join(_CACHE, hashlib.sha256(text.encode()).hexdigest()[:20] + ".cu")
    with open(path, "w") as fh:
        fh.write(text)
    done = subprocess.run([nvcc_path(), f"-arch={arch}", "-cubin", "-o", os.devnull, path],
                          capture_output=True, text=True, check=False)
    return "" if done.returncode == 0 else done.stderr


def host_library(text: str) -> ctypes.CDLL:
    """`text` (a typed kernel source) compiled for the host, cached by its hash."""
    key = hashlib.sha256((SHIM + text).encode()).hexdigest()[:24]
    lib = _LIBS.get(key)
    if lib is not None:
        return lib
    os.makedirs(_CACHE, exist_ok=True)
    so = os.path.join(_CACHE, key + ".so")
    if not os.path.exists(so):
        src = os.path.join(_CACHE, key + ".cpp")
        with open(src, "w") as fh:
            fh.write(SHIM + text)
        done = subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-w", "-o", so + ".tmp", src],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the kernel source does not compile as C++:\n{done.stderr}\n{text}")
        os.replace(so + ".tmp", so)
    lib = _LIBS[key] = ctypes.CDLL(so)
    return lib


def _c_arg(value):
    if isinstance(value, np.ndarray):
        if not value.flags.c_contiguous:
            raise ValueError("kernels take contiguous arrays")
        return ctypes.c_void_p(value.ctypes.data)
    kinds = {np.float32: ctypes.c_float, np.float64: ctypes.c_double, np.int64: ctypes.c_longlong,
             np.int32: ctypes.c_int, np.uint64: ctypes.c_ulonglong, np.uint32: ctypes.c_uint}
    for kind, ctype in kinds.items():
        if isinstance(value, kind):
            return ctype(value.item())
    raise TypeError(f"kernel argument of type {type(value).__name__}: pass NumPy scalars of the C type")


def run_blocks(lib: ctypes.CDLL, name: str, blocks: int, args: tuple) -> None:
    fn = getattr(lib, name)
    fn.restype = None
    c_args = [_c_arg(a) for a in args]
    for b in range(blocks):
        lib.emu_set_block(ctypes.c_uint(b), ctypes.c_uint(blocks))
        fn(*c_args)


# ---- CuPy's ElementwiseKernel / ReductionKernel, emulated ---------------------------------------

_PARAM = re.compile(r"^\s*(raw\s+)?(\w+)\s+(\w+)\s*$")
_NUMPY_OF_C = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64,
               "bool": np.bool_, "float": np.float32, "double": np.float64}
_C_OF = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int32): "int",
         np.dtype(np.int64): "long long", np.dtype(np.bool_): "bool", np.dtype(np.int8): "signed char"}


def _params(text: str):
    out = []
    for part in text.split(","):
        if part.strip():
            m = _PARAM.match(part)
            if not m:
                raise ValueError(f"cannot read kernel parameter {part!r}")
            out.append((bool(m.group(1)), m.group(2), m.group(3)))
    return out


def _resolve(kind: str, t_dtype):
    return np.dtype(t_dtype) if kind == "T" else np.dtype(_NUMPY_OF_C[kind])


class _Elementwise:
    def __init__(self, in_params, out_params, operation, name, preamble):
        self.ins, self.outs = _params(in_params), _params(out_params)
        self.operation, self.name, self.preamble = operation, name, preamble

    def __call__(self, *args):
        ins = list(args[:len(self.ins)])
        given = list(args[len(self.ins):])
        t_dtype = next(np.asarray(a).dtype for a, (raw, kind, _) in zip(ins, self.ins) if kind == "T")
        plain = [np.asarray(a) for a, p in zip(ins, self.ins) if not p[0]] + [np.asarray(g) for g in given]
        shape = np.broadcast_shapes(*(a.shape for a in plain)) if plain else ()
        arrays, decls = [], []
        for index, (a, (raw, kind, pname)) in enumerate(zip(ins, self.ins)):
            dtype = _resolve(kind, t_dtype)
            if raw:
                arrays.append(np.ascontiguousarray(np.asarray(a), dtype=dtype))
                decls.append(("in_raw", _C_OF[dtype], pname, index))
            else:
                if np.isscalar(a) or np.ndim(a) == 0:
                    a = np.asarray(a, dtype=dtype)
                arrays.append(np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=dtype), shape)))
                decls.append(("in", _C_OF[dtype], pname, index))
        outs = []
        for k, (raw, kind, pname) in enumerate(self.outs):
            dtype = _resolve(kind, t_dtype)
            target = given[k] if k < len(given) else np.empty(shape, dtype=dtype)
            outs.append(target)
            arrays.append(np.empty(shape, dtype=dtype) if not target.flags.c_contiguous else target)
            decls.append(("out", _C_OF[dtype], pname, len(ins) + k))
        n = int(np.prod(shape)) if shape else 1
        signature = ", ".join(f"{'const ' if d[0] != 'out' else ''}{d[1]}* p{d[3]}" for d in decls)
        body = []
        for role, ctype, pname, index in decls:
            if role == "in":
                body.append(f"const {ctype} {pname} = p{index}[i];")
            elif role == "in_raw":
                body.append(f"const {ctype}* {pname} = p{index};")
            else:
                body.append(f"{ctype}& {pname} = p{index}[i];")
        source = (f"{self.preamble}\nextern \"C\" __global__ void {self.name}({signature}, long long n) {{\n"
                  f"  for (long long i = 0; i < n; ++i) {{ {' '.join(body)} {self.operation}; }}\n}}\n")
        lib = host_library(f"typedef {_C_OF[np.dtype(t_dtype)]} T;\n{source}")
        run_blocks(lib, self.name, 1, tuple(arrays) + (np.int64(n),))
        for k, target in enumerate(outs):
            produced = arrays[len(ins) + k]
            if produced is not target:
                target[...] = produced
        return outs[0] if len(outs) == 1 else tuple(outs)


class _Reduction:
    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name):
        self.ins, self.outs = _params(in_params), _params(out_params)
        self.map_expr, self.reduce_expr, self.post = map_expr, reduce_expr, post_map_expr
        self.identity, self.name = identity, name

    def __call__(self, *args, axis=None, keepdims=False):
        ins = [np.asarray(a) for a in args[:len(self.ins)]]
        t_dtype = next(a.dtype for a, (_, kind, _) in zip(ins, self.ins) if kind == "T")
        shape = np.broadcast_shapes(*(a.shape for a in ins))
        axes = tuple(range(len(shape))) if axis is None else tuple(np.atleast_1d(axis) % max(len(shape), 1))
        kept = tuple(a for a in range(len(shape)) if a not in axes)
        order = kept + axes
        out_shape = tuple(shape[a] for a in kept)
        rows = int(np.prod(out_shape)) if out_shape else 1
        span = int(np.prod([shape[a] for a in axes])) if axes else 1
        arrays, decls = [], []
        for index, (a, (_, kind, pname)) in enumerate(zip(ins, self.ins)):
            dtype = _resolve(kind, t_dtype)
            full = np.broadcast_to(a.astype(dtype, copy=False), shape).transpose(order)
            arrays.append(np.ascontiguousarray(full).reshape(rows, span))
            decls.append((_C_OF[dtype], pname, index))
        (_, out_kind, out_name), = self.outs
        out_dtype = _resolve(out_kind, t_dtype)
        out = np.empty(rows, dtype=out_dtype)
        signature = ", ".join(f"const {c}* p{k}" for c, _, k in decls)
        loads = " ".join(f"const {c} {pname} = p{k}[o * span + r];" for c, pname, k in decls)
        source = (f"extern \"C\" __global__ void {self.name}({signature}, {_C_OF[out_dtype]}* out, long long rows, "
                  f"long long span) {{\n  for (long long o = 0; o < rows; ++o) {{\n"
                  f"    {_C_OF[out_dtype]} a = {self.identity};\n"
                  f"    for (long long r = 0; r < span; ++r) {{ {loads} {_C_OF[out_dtype]} b = {self.map_expr}; "
                  f"a = {self.reduce_expr}; }}\n"
                  f"    {_C_OF[out_dtype]}& {out_name} = out[o]; {self.post};\n  }}\n}}\n")
        lib = host_library(f"typedef {_C_OF[np.dtype(t_dtype)]} T;\n{source}")
        run_blocks(lib, self.name, 1, tuple(arrays) + (out, np.int64(rows), np.int64(span)))
        result = out.reshape(out_shape)
        if keepdims:
            result = result.reshape(tuple(1 if a in axes else d for a, d in enumerate(shape)))
        return result


class EmulatedKernels:
    """runtime/gpu/kernels.KernelCache on the CPU: the same sources, run by g++-compiled code."""

    def __init__(self):
        self.compiled: set[str] = set()

    def launch(self, source: str, name: str, dtype, count: int, args: tuple, block: int = BLOCK) -> None:
        if count <= 0:
            return
        self.launch_blocks(source, name, dtype, grid_for(count, block), args)

    def launch_blocks(self, source: str, name: str, dtype, blocks: int, args: tuple, block: int = BLOCK) -> None:
        text = typed_source(source, dtype)
        self.compiled.add(name)
        run_blocks(host_library(text), name, blocks, args)

    def elementwise(self, in_params, out_params, operation, name, preamble=""):
        return _Elementwise(in_params, out_params, operation, name, preamble)

    def reduction(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name):
        return _Reduction(in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name)

    def constant(self, key, host_array):
        return np.asarray(host_array)


def c_name(dtype) -> str:
    return c_type(dtype)
