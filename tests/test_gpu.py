"""The GPU engine: its kernels, cuDNN graphs and data staging, on the CPU and (where one is) on a GPU.

Two kinds of test live here:

* **Everywhere.** The CUDA sources of the ops and learners run on the CPU through
  tests/cuda_emulation.py (compiled with g++ for one thread per block; every netlang kernel is a
  grid-stride loop, so that computes what a full launch computes) and are compared with the NumPy
  kernels: the registry's checks through an emulated GPU backend, the fused learner updates against
  the NumPy learners. nvcc, where installed, compiles every source for sm_90. The cuDNN geometry
  translation is checked against a direct convolution with the padding cuDNN would apply, the graph
  cache keys and the pinned staging ring with NumPy stand-ins.
* **On a GPU** (skipped without CuPy and a device): every op of the registry forward and backward on
  CuPy against NumPy, the fused learners against the NumPy learners, and a few training steps of the
  config families on both backends.
"""
from __future__ import annotations

import io
import itertools
import json
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import settings_of
from cuda_emulation import EmulatedKernels, have_gxx, nvcc_compiles, nvcc_path
from test_op_registry import CASES, Case

from netlang.cli import main
from netlang.ops import conv as conv_ops
from netlang.ops import registry
from netlang.runtime.backend import HostRandom, NumpyBackend, RandomStream, gpu_available, select_backend
from netlang.runtime.flatbuffer import FlatParameters
from netlang.runtime.gpu import updates
from netlang.runtime.gpu.kernels import KernelCache, grid_for, source_key, typed_source
from netlang.runtime.gpu.staging import StagingRing
from netlang.runtime.learners import create_learner

needs_gxx = pytest.mark.skipif(not have_gxx(), reason="g++ is needed to run CUDA sources on the CPU")
needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc is not installed")
needs_gpu = pytest.mark.skipif(not gpu_available(), reason="CuPy with a CUDA device is not available")


class EmulatedGpuBackend(NumpyBackend):
    """The CuPy backend's services over NumPy arrays: ops pick their "cupy" kernels, which launch
    their CUDA sources through the emulator; cuDNN is absent (convolution takes its fallback)."""

    name = "cupy"

    def __init__(self, dtype=np.float32):
        super().__init__(dtype, "emulated-gpu")
        self.kernels = EmulatedKernels()
        self.cudnn = None

    def upload_scalars(self, host):
        return np.array(host)


# ---- fused learner updates ---------------------------------------------------------------------------

SHAPES = {"W": (7, 5), "b": (5,), "V": (3, 4, 2), "frozen": (2,)}


def _settings(update: str, keys: str, **fields):
    text = (f'gradUpdateType = "{update}" ; learningRatesPerSample = 0.01*2:0.004 ; momentumPerMB = 0.9\n'
            f"maxEpochs = 3\n{keys}")
    return replace(settings_of.sgd(text), **fields)


def _learner(backend, update, dtype, multipliers, variant):
    lr_multipliers = {"frozen": 0.0, **({"b": 0.5} if multipliers else {})}
    params = FlatParameters(SHAPES, backend=backend, dtype=dtype, lr_multipliers=lr_multipliers,
                            reg_multipliers={"V": 0.0, "W": 2.0} if multipliers else None)
    rng = np.random.default_rng(3)
    params.copy_from({k: rng.standard_normal(v) for k, v in SHAPES.items()})
    keys, fields = VARIANTS[variant]
    return create_learner(_settings(update, keys, **fields), params)


VARIANTS = {        # SGD block keys, and settings no key sets
    "plain": ("", {}),
    "nesterov": ("useNAG = true", {}),
    "truncate_l1_l2": ("clippingThresholdPerSample = 0.05 ; L1RegWeight = 0.001 ; L2RegWeight = 0.01", {}),
    "norm_clip": ("clippingThresholdPerSample = 0.02 ; gradientClippingWithTruncation = false", {}),
    "no_ave_multiplier": ("normWithAveMultiplier = false ; L2RegWeight = 0.001", {}),
    "noise": ("gaussianNoiseInjectStd = 0.01", {"noise_seed": 4}),
}


@needs_gxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("update", ["none", "adagrad", "rmsProp", "fsAdagrad", "adam", "adadelta"])
def test_a_fused_update_equals_the_numpy_learner(update, variant, dtype):
    if variant == "nesterov" and update != "none":
        pytest.skip("useNAG belongs to plain SGD")
    for multipliers in (False, True):
        cpu = _learner(NumpyBackend(dtype), update, dtype, multipliers, variant)
        gpu = _learner(EmulatedGpuBackend(dtype), update, dtype, multipliers, variant)
        assert cpu.fused is None and gpu.fused is not None
        rng = np.random.default_rng(11)
        for step in range(5):
            grad = rng.standard_normal(cpu.params.size) * (0.5 + step)
            epoch, samples = 1 + step // 3, 16 + 8 * step
            for learner in (cpu, gpu):
                learner.params.grad[...] = grad.astype(dtype)
                learner.step(epoch, samples)
        tolerance = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(gpu.params.data, cpu.params.data, rtol=tolerance, atol=tolerance)
        for name in cpu.state:
            np.testing.assert_allclose(gpu.state[name], cpu.state[name], rtol=tolerance, atol=tolerance)
        assert gpu.scalars == cpu.scalars
        frozen = gpu.params.segment("frozen")
        np.testing.assert_array_equal(gpu.params.data[frozen], cpu.params.data[frozen])


def test_an_update_source_compiles_the_configuration_in_and_reads_the_rest_from_the_hyper_buffer():
    plain = updates.update_source(updates.UpdateConfig("none"))
    nag = updates.update_source(updates.UpdateConfig("none", nesterov=True))
    assert "#define NESTEROV 0" in plain and "#define NESTEROV 1" in nag
    two_phase = updates.update_source(updates.UpdateConfig("adagrad", ave_multiplier=True))
    assert 'void apply(' in two_phase and 'void apply(' not in updates.update_source(updates.UpdateConfig("adagrad"))
    hyper = updates.hyper_values("adam", 0.5, 0.9, 0.0, 0.0, 0.0,
                                 {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "correction": 2.0})
    assert hyper[updates.HYPER.index("lr_correction")] == 1.0
    with pytest.raises(ValueError, match="no fused update"):
        updates.update_source(updates.UpdateConfig("sgdx"))


@needs_nvcc
@pytest.mark.parametrize("rule", updates.RULES)
def test_every_update_source_compiles_with_nvcc(rule):
    for clip, flags in itertools.product((0, 1, 2), (False, True)):
        config = updates.UpdateConfig(rule, clip, uniform_lr=flags, reg_multiplier=flags, l2=flags, l1=not flags,
                                      noise=flags, nesterov=flags and rule == "none", ave_multiplier=flags)
        for dtype in (np.float32, np.float64):
            assert nvcc_compiles(updates.update_source(config), dtype) == ""


# ---- every op's GPU kernels, run on the CPU, against its NumPy kernels --------------------------------


GPU_OPS = [op for op in registry.all_ops() if not op.leaf and "cupy" in op.kernels]
GPU_CASES = [pytest.param(op, i, id=f"{op.name}-{i}") for op in GPU_OPS for i in range(len(op.checks))]


class ReferenceCudnn:
    """cuDNN's three convolutions as its documentation defines them (cross-correlation of the
    zero-padded input, stride, dilation), written out in NumPy: the stand-in that lets the CPU run
    the convolution ops' cuDNN path, geometry translation and all."""

    def supports(self, conv, dtype):
        return True

    @staticmethod
    def _windows(x, conv):
        pad = [(0, 0), (0, 0)] + list(zip(conv.pre, conv.post))
        xp_ = np.pad(x, pad)
        ks = conv.w_dims[2:]
        outs = []
        for axis, (k, s, d) in enumerate(zip(ks, conv.stride, conv.dilation)):
            length = xp_.shape[2 + axis]
            outs.append((length - (d * (k - 1) + 1)) // s + 1)
        return xp_, ks, outs

    def forward(self, x, w, conv):
        padded, ks, outs = self._windows(x, conv)
        y = np.zeros((x.shape[0], conv.w_dims[0]) + tuple(outs), dtype=x.dtype)
        for offsets in itertools.product(*(range(k) for k in ks)):
            region = tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                           for o, d, s, n in zip(offsets, conv.dilation, conv.stride, outs))
            patch = padded[(slice(None), slice(None)) + region]
            taps = w[(slice(None), slice(None)) + offsets]
            y += np.einsum("ncs,mc->nms", patch.reshape(patch.shape[:2] + (-1,)), taps).reshape(y.shape)
        assert y.shape[1:] == tuple(conv.y_dims)
        return y

    def backward_data(self, dy, w, conv, dx):
        seen = np.zeros((dy.shape[0],) + tuple(dx.shape[1:]), dtype=dy.dtype)
        padded, ks, outs = self._windows(seen, conv)
        grad = np.zeros_like(padded)
        for offsets in itertools.product(*(range(k) for k in ks)):
            region = tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                           for o, d, s, n in zip(offsets, conv.dilation, conv.stride, outs))
            taps = w[(slice(None), slice(None)) + offsets]
            target = grad[(slice(None), slice(None)) + region]
            target += np.einsum("nms,mc->ncs", dy.reshape(dy.shape[:2] + (-1,)), taps).reshape(target.shape)
        inner = tuple(slice(p, p + n) for p, n in zip(conv.pre, dx.shape[2:]))
        dx[...] = grad[(slice(None), slice(None)) + inner]
        return True

    def backward_filter(self, x, dy, conv, dw):
        padded, ks, outs = self._windows(x, conv)
        for offsets in itertools.product(*(range(k) for k in ks)):
            region = tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                           for o, d, s, n in zip(offsets, conv.dilation, conv.stride, outs))
            patch = padded[(slice(None), slice(None)) + region]
            dw[(slice(None), slice(None)) + offsets] = np.einsum(
                "ncs,nms->mc", patch.reshape(patch.shape[:2] + (-1,)), dy.reshape(dy.shape[:2] + (-1,)))
        return True


def _compare(op, index, gpu_backend):
    check = op.checks[index]
    cpu = Case(op, check, np.float64, NumpyBackend(np.float64))
    gpu = Case(op, check, np.float64, gpu_backend)
    cpu_ctx, cpu_y = cpu.forward()
    gpu_ctx, gpu_y = gpu.forward()
    np.testing.assert_allclose(gpu_y, cpu_y, rtol=1e-10, atol=1e-12, err_msg=f"{op.name} check {index}: forward")
    for key in cpu_ctx.state:          # batch norm's running statistics and counters
        np.testing.assert_allclose(np.asarray(gpu_ctx.state[key], dtype=float).reshape(-1),
                                   np.asarray(cpu_ctx.state[key], dtype=float).reshape(-1), rtol=1e-10)
    if not op.differentiable or op.backward is None or not check.grad:
        return
    weights = np.random.default_rng(5).standard_normal(cpu_y.shape)
    cpu_grads = registry.apply_backward(op, cpu_ctx, cpu.copies(), cpu_y, weights, cpu.attrs, len(cpu.out_shape))
    gpu_grads = registry.apply_backward(op, gpu_ctx, gpu.copies(), gpu_y, weights, gpu.attrs, len(gpu.out_shape))
    for i, (a, b) in enumerate(zip(cpu_grads, gpu_grads)):
        assert (a is None) == (b is None), f"{op.name} check {index}: gradient {i} present on one backend only"
        if a is not None:
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-11, err_msg=f"{op.name} check {index}: gradient {i}")


@needs_gxx
@pytest.mark.parametrize("op,index", GPU_CASES)
def test_an_ops_gpu_kernels_equal_its_numpy_kernels(op, index):
    backend = EmulatedGpuBackend(np.float64)
    if op.name.startswith("Convolution"):
        backend.cudnn = ReferenceCudnn()
    _compare(op, index, backend)


@pytest.mark.parametrize("op,index", [c for c in GPU_CASES if c.values[0].name.startswith("Convolution")])
def test_without_cudnn_a_convolution_runs_its_im2col_kernels(op, index):
    _compare(op, index, EmulatedGpuBackend(np.float64))       # cudnn None: the fallback, same numbers


def test_the_ops_with_gpu_kernels_are_the_ones_the_engine_promises():
    names = {op.name for op in GPU_OPS}
    assert {"Convolution", "ConvolutionTranspose", "Pooling", "MaxPooling", "AveragePooling", "BatchNormalization",
            "OptimizedRNNStack", "Dropout", "Sigmoid", "Tanh", "ReLU"} <= names


# ---- CNTK's convolution geometry in cuDNN's terms -------------------------------------------------------

GEOMETRIES = [
    # (x BS shape, W BS shape, attrs): every padding rule of conv.py's docstring
    ((32, 32, 3), (1, 1, 3, 4), {"kernelShape": (1, 1), "strideShape": 4}),      # auto: lower -1 (a crop)
    ((9, 9, 2), (1, 1, 2, 3), {"kernelShape": (1, 1), "strideShape": 2}),        # auto: upper -1
    ((8, 7, 2), (2, 2, 2, 3), {"kernelShape": (2, 2)}),                          # even kernel: 0 below, 1 above
    ((8, 8, 2), (4, 4, 2, 3), {"kernelShape": (4, 4), "strideShape": 2}),        # k=4 at stride 2
    ((10, 9, 1), (3, 3, 1, 2), {"kernelShape": (3, 3), "autoPadding": False, "lowerPad": (2, 1),
                                "upperPad": (0, 3)}),                            # explicit, asymmetric
    ((11, 10, 2), (3, 3, 2, 2), {"kernelShape": (3, 3), "dilation": (2, 1), "strideShape": (1, 2)}),
    ((12,), (3, 2), {"kernelShape": (3,), "strideShape": 2}),                  # 1-D, no channel axis
    ((6, 5, 4, 2), (3, 3, 3, 2, 2), {"kernelShape": (3, 3, 3)}),              # 3-D
    ((6, 6, 4), (3, 3, 2, 3), {"kernelShape": (3, 3, 2), "strideShape": (1, 1, 2), "autoPadding": (True, True, False)}),
]


def _conv_case(x_shape, w_shape, attrs, backend, transposed=False):
    from netlang.ops.registry import OpContext
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3,) + tuple(reversed(x_shape)))
    w = rng.standard_normal(tuple(reversed(w_shape)))
    op = conv_ops.CONVOLUTION
    ctx = OpContext(backend=backend, dyn=[0, 1], out_dyn=1, training=True)
    y = registry.apply_forward(op, ctx, [w, x], attrs, len(x_shape))
    gy = rng.standard_normal(y.shape)
    return [y] + registry.apply_backward(op, ctx, [w, x], y, gy, attrs, len(x_shape))


@needs_gxx
@pytest.mark.parametrize("x_shape,w_shape,attrs", GEOMETRIES)
def test_cudnns_padding_stride_and_crops_reproduce_cntks_geometry(x_shape, w_shape, attrs):
    gpu = EmulatedGpuBackend(np.float64)
    gpu.cudnn = ReferenceCudnn()
    expected = _conv_case(x_shape, w_shape, attrs, NumpyBackend(np.float64))
    got = _conv_case(x_shape, w_shape, attrs, gpu)
    for name, a, b in zip(("y", "dW", "dx"), expected, got):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10, err_msg=name)


def test_the_cudnn_translation_crops_only_what_changes_the_output():
    geo = conv_ops.geometry_for((32, 32, 3), (1, 1, 3, 4), {"kernelShape": (1, 1), "strideShape": 4}, False)
    conv = conv_ops.cudnn_convolution(geo)
    assert conv.x_dims == (3, 32, 32) and conv.w_dims == (4, 3, 1, 1) and conv.y_dims == (4, 8, 8)
    assert conv.crop == ((1, 0), (1, 0)) and conv.pre == (0, 0) and conv.stride == (4, 4)
    geo = conv_ops.geometry_for((56, 56, 8), (1, 1, 8, 4), {"kernelShape": (1, 1), "strideShape": 2}, False)
    conv = conv_ops.cudnn_convolution(geo)
    assert not conv.cropped and conv.post == (0, 0) and conv.y_dims == (4, 28, 28)   # upper -1: no copy
    four = conv_ops.geometry_for((4, 4, 4, 4, 2), (2, 2, 2, 2, 2, 1), {"kernelShape": (2, 2, 2, 2)}, False)
    assert conv_ops.cudnn_convolution(four) is None                                     # four sliding axes


# ---- staging minibatches through pinned memory ---------------------------------------------------------



class LoggedTransfers:
    """StagingRing's device operations on NumPy, with a log of the stream order they ask for."""

    def __init__(self):
        self.log = []
        self._events = 0

    def _event(self, stream):
        self._events += 1
        name = f"{stream}{self._events}"
        self.log.append(("record", name))
        return name

    def pinned(self, nbytes):
        self.log.append(("pinned", nbytes))
        return np.zeros(nbytes, dtype=np.uint8)

    def device_bytes(self, nbytes):
        self.log.append(("device", nbytes))
        return np.zeros(nbytes, dtype=np.uint8)

    def copy_async(self, device_bytes, host_bytes):
        self.log.append(("copy", device_bytes.ctypes.data))
        device_bytes[...] = host_bytes

    def copy_event(self):
        return self._event("copy")

    def compute_event(self):
        return self._event("compute")

    def copy_waits(self, event):
        self.log.append(("copy waits", event))

    def compute_waits(self, event):
        self.log.append(("compute waits", event))

    def host_waits(self, event):
        self.log.append(("host waits", event))

    def view(self, device_bytes, dtype, shape):
        return device_bytes.view(dtype).reshape(shape)


def test_staged_uploads_alternate_two_device_buffers_and_convert_on_the_host():
    transfers = LoggedTransfers()
    ring = StagingRing(transfers, slots=3)
    batches = [np.arange(6, dtype=np.float64).reshape(2, 3) + k for k in range(4)]
    out = [ring.upload("x", b, np.float32) for b in batches]
    for b, o in zip(batches, out):
        assert o.dtype == np.float32 and o.shape == (2, 3)
    np.testing.assert_array_equal(out[3], batches[3].astype(np.float32))
    addresses = [o.ctypes.data for o in out]
    assert addresses[0] != addresses[1] and addresses[2] == addresses[0] and addresses[3] == addresses[1]
    np.testing.assert_array_equal(out[1], batches[3].astype(np.float32))   # the buffer of upload 2 was reused by 4
    assert ring.grown == 2


def test_a_reused_buffer_is_written_after_the_compute_work_queued_before_the_previous_upload():
    transfers = LoggedTransfers()
    ring = StagingRing(transfers, slots=2)
    for k in range(3):
        ring.upload("x", np.full(4, float(k)), np.float64)
    log = transfers.log
    copies = [i for i, entry in enumerate(log) if entry[0] == "copy"]
    # The third upload reuses the first buffer: its copy waits for the compute event recorded at the
    # second upload (everything queued before step 2 started, so the step that read buffer 1 is done).
    released_at_second = next(e for e in log[copies[1]:copies[2]] if e[0] == "record" and e[1].startswith("compute"))[1]
    assert ("copy waits", released_at_second) in log[copies[1]:copies[2]]
    # Every copy is waited for by the compute stream, never by the host, until a pinned slot comes round.
    assert sum(1 for e in log if e[0] == "compute waits") == 3
    host_waits = [e for e in log if e[0] == "host waits"]
    first_copy = next(e[1] for e in log if e[0] == "record" and e[1].startswith("copy"))
    assert host_waits == [("host waits", first_copy)]          # pinned slot 1 comes round at upload 3


def test_a_grown_buffer_waits_for_all_compute_work_queued_so_far():
    transfers = LoggedTransfers()
    ring = StagingRing(transfers, slots=4)
    ring.upload("x", np.zeros(4), np.float64)
    ring.upload("x", np.zeros(4), np.float64)
    start = len(transfers.log)
    ring.upload("x", np.zeros(64), np.float64)        # larger than buffer 1: a fresh one
    fresh = transfers.log[start:]
    assert ("device", 512) in fresh
    recorded = [e[1] for e in fresh if e[0] == "record"]
    assert ("copy waits", recorded[0]) in fresh and recorded[0].startswith("compute")


# ---- the kernel cache ----------------------------------------------------------------------------------

class CountingCupy:
    """Stands in for the cupy module: counts the kernels constructed (compilation happens there)."""

    def __init__(self):
        self.built = []

    def RawKernel(self, source, name, options=()):
        self.built.append((name, source, options))
        return lambda grid, block, args: self.built.append(("launch", grid, block))

    def ElementwiseKernel(self, *args, **kwargs):
        self.built.append(("elementwise",) + args)
        return object()


def test_a_kernel_is_compiled_once_per_source_and_type_and_launched_over_a_grid_stride_grid():
    fake = CountingCupy()
    cache = KernelCache(fake)
    source = 'extern "C" __global__ void k(T* a, long long n) {}'
    for _ in range(3):
        cache.launch(source, "k", np.float32, 1000, ())
    cache.launch(source, "k", np.float64, 10, ())
    compiled = [b for b in fake.built if b[0] == "k"]
    assert len(compiled) == 2 and compiled[0][1].startswith("typedef float T;") and "--fmad=false" in compiled[0][2]
    assert compiled[1][1].startswith("typedef double T;")
    assert ("launch", (grid_for(1000),), (256,)) in fake.built and grid_for(10 ** 9) == 65536
    cache.elementwise("T x", "T y", "y = x", "copy")
    cache.elementwise("T x", "T y", "y = x", "copy")
    assert sum(1 for b in fake.built if b[0] == "elementwise") == 1
    assert source_key(source, "k") != source_key(source + " ", "k")
    with pytest.raises(ValueError, match="float32 or float64"):
        typed_source(source, np.int32)


# ---- every CUDA source of the engine compiles with nvcc --------------------------------------------------

def _elementwise_wrapper(in_params: str, out_params: str, operation: str) -> str:
    """An ElementwiseKernel's statement inside a kernel of the same parameters, for nvcc."""
    def decl(text, out):
        kind, name = text.split()
        ctype = {"T": "T", "float64": "double", "float32": "float"}[kind]
        return f"{ctype}{'*' if out else ''} {name}"
    ins = [p.strip() for p in in_params.split(",")]
    outs = [p.strip() for p in out_params.split(",")]
    refs = " ".join(f"{decl(o, False).split()[0]}& {o.split()[1]} = {o.split()[1]}_[i];" for o in outs)
    params = ", ".join([decl(p, False) for p in ins] + [decl(o, True) + "_" for o in outs])
    return f'extern "C" __global__ void check({params}, long long n) {{ for (long long i = 0; i < n; ++i) {{ {refs} {operation}; }} }}'


@needs_nvcc
def test_every_raw_kernel_source_and_elementwise_statement_compiles_with_nvcc():
    from netlang.ops import normalization, pooling, rnn, roi
    sources = [pooling.POOL_SOURCE, normalization.BN_SOURCE, rnn.LSTM_SOURCE, roi.ROI_SOURCE]
    statements = [("T x, T m, T g, T b", "T y", "y = (x - m) * g + b"),
                  ("T g, T x, T m, T k, T v, T s, T w", "T gx", "gx = g * k - ((x - m) * v + s) * w"),
                  ("T x, float64 u, float64 rate, T scale", "T y, T mask", "mask = u >= rate ? scale : (T)0; y = x * mask")]
    for name in ("Sigmoid", "ELU", "Softplus"):
        statements.append(("T x", "T y", _statement(registry.get(name), 0)))
    for name in ("Sigmoid", "Tanh", "ReLU", "ELU", "Softplus", "Sqrt", "Abs", "Reciprocal", "Square", "Sin", "Cos"):
        statements.append(("T x, T y, T gy", "T gx", _statement(registry.get(name), 1)))
    sources += [_elementwise_wrapper(*s) for s in statements]
    for source in sources:
        for dtype in (np.float32, np.float64):
            assert nvcc_compiles(source, dtype) == "", source


def _statement(op, which: int) -> str:
    """The CUDA statement a unary op's GPU kernel compiles (read back from its kernel cache use)."""
    recorded = []

    class Recorder:
        def elementwise(self, in_params, out_params, operation, name, preamble=""):
            recorded.append(operation)
            return lambda *args: np.zeros(1)

    backend = EmulatedGpuBackend(np.float64)
    backend.kernels = Recorder()
    from netlang.ops.registry import OpContext
    ctx = OpContext(backend=backend, dyn=[1], out_dyn=1)
    forward, backward = op.kernels["cupy"]
    x = np.ones((2, 2))
    if which == 0:
        forward(ctx, [x], {})
    else:
        backward(ctx, [x], x, x, {})
    assert recorded, f"{op.name}: no fused kernel for pass {which}"
    return recorded[0]


# ---- on a GPU: the real CuPy backend -----------------------------------------------------------------



def _gpu(dtype):
    return select_backend(0, "double" if dtype == np.float64 else "float")


class HostDrawsUploaded(RandomStream):
    """NumPy's draws, uploaded. The CuPy backend draws with cuRAND, so a random op (Dropout) or the
    learner's noise differs from the CPU's by design; with this stream the GPU kernels get the very
    numbers the NumPy kernels get, and the two backends can be compared value for value."""

    def __init__(self, backend, seed):
        self._host, self._backend = HostRandom(seed), backend

    def random(self, shape):
        return self._backend.from_host(self._host.random(shape))

    def standard_normal(self, shape, dtype):
        return self._backend.from_host(self._host.standard_normal(shape, dtype))


def _host_draws(monkeypatch, backend):
    monkeypatch.setattr(backend, "random_stream", lambda seed: HostDrawsUploaded(backend, seed))
    return backend


@needs_gpu
@pytest.mark.parametrize("op,index", CASES)
def test_every_op_runs_forward_and_backward_on_cupy_as_on_numpy(op, index, monkeypatch):
    """float64 where cuDNN allows it (a convolution cuDNN declines in float64 runs im2col, which is
    exact too); float32 to single-precision tolerance."""
    for dtype, rtol in ((np.float64, 1e-8), (np.float32, 2e-3)):
        check = op.checks[index]
        cpu = Case(op, check, dtype, NumpyBackend(dtype))
        gpu_backend = _host_draws(monkeypatch, _gpu(dtype))
        gpu = Case(op, check, dtype, gpu_backend)
        cpu_ctx, cpu_y = cpu.forward()
        gpu_ctx, gpu_y = gpu.forward()
        np.testing.assert_allclose(gpu_backend.to_host(gpu_y), cpu_y, rtol=rtol, atol=rtol,
                                   err_msg=f"{op.name} check {index} {np.dtype(dtype).name}: forward")
        if not op.differentiable or op.backward is None or not check.grad:
            continue
        weights = np.random.default_rng(5).standard_normal(cpu_y.shape).astype(dtype)
        cpu_grads = registry.apply_backward(op, cpu_ctx, cpu.copies(), cpu_y, weights, cpu.attrs, len(cpu.out_shape))
        gpu_grads = registry.apply_backward(op, gpu_ctx, gpu.copies(), gpu_y, gpu_backend.from_host(weights),
                                            gpu.attrs, len(gpu.out_shape))
        for i, (a, b) in enumerate(zip(cpu_grads, gpu_grads)):
            if a is not None:
                scale = max(1.0, float(np.max(np.abs(a))))
                np.testing.assert_allclose(gpu_backend.to_host(b), a, rtol=rtol, atol=rtol * scale,
                                           err_msg=f"{op.name} check {index} {np.dtype(dtype).name}: gradient {i}")


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("update", ["none", "adagrad", "rmsProp", "fsAdagrad", "adam", "adadelta"])
def test_a_fused_update_on_the_gpu_equals_the_numpy_learner(update, variant, dtype, monkeypatch):
    if variant == "nesterov" and update != "none":
        pytest.skip("useNAG belongs to plain SGD")
    backend = _host_draws(monkeypatch, _gpu(dtype))
    cpu = _learner(NumpyBackend(dtype), update, dtype, True, variant)
    gpu = _learner(backend, update, dtype, True, variant)
    assert gpu.fused is not None
    rng = np.random.default_rng(11)
    for step in range(5):
        grad = rng.standard_normal(cpu.params.size) * (0.5 + step)
        for learner in (cpu, gpu):
            learner.params.grad[...] = learner.params.backend.from_host(grad.astype(dtype))
            learner.step(1 + step // 3, 16 + 8 * step)
    tolerance = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(backend.to_host(gpu.params.data), cpu.params.data, rtol=tolerance, atol=tolerance)
    for name in cpu.state:
        np.testing.assert_allclose(backend.to_host(gpu.state[name]), cpu.state[name], rtol=tolerance, atol=tolerance)


# A few minibatches of each config family on both backends: the reported criterion must agree.

MNIST_LIKE = """
command = train
deviceId = "cpu"
modelPath = "{out}/model.dnn"
train = {{
    action = "train"
    network = {{
        features = Input {{28:28:1}} ; labels = Input {{10}}
        z = Sequential ((x => x * (1/256)) : ConvolutionalLayer {{8, (5:5), pad=true, activation=ReLU}} : MaxPoolingLayer {{(3:3), stride=(2:2)}} :
                        ConvolutionalLayer {{8, (3:3), pad=false, activation=ReLU}} : DenseLayer {{16, activation=ReLU}} :
                        LinearLayer {{10}}) (features)
        ce = CrossEntropyWithSoftmax (labels, z) ; errs = ClassificationError (labels, z)
        criterionNodes = (ce) ; evaluationNodes = (errs)
    }}
    SGD = {{ epochSize = 256 ; minibatchSize = 32 ; maxEpochs = 1 ; learningRatesPerSample = 0.001 ; momentumPerMB = 0.9
             numMBsToShowResult = 1 }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}" ; randomize = false
               input = {{ features = {{ dim = 784 ; format = "dense" }} ; labels = {{ dim = 10 ; format = "dense" }} }} }}
}}
"""

RESNET_LIKE = """
command = train
deviceId = "cpu"
modelPath = "{out}/model.dnn"
include "{repo}/configs/vision/resnet_blocks.net"
train = {{
    action = "train"
    network = {{
        features = Input {{8:8:3}} ; labels = Input {{10}}
        z = Sequential (ConvBNReLU {{8, (3:3)}} : ResNetBasic {{8}} : ResNetBasicInc {{16}} :
                        GlobalAveragePoolingLayer {{}} : LinearLayer {{10}}) (features)
        ce = CrossEntropyWithSoftmax (labels, z) ; errs = ClassificationError (labels, z)
        criterionNodes = (ce) ; evaluationNodes = (errs)
    }}
    SGD = {{ epochSize = 256 ; minibatchSize = 32 ; maxEpochs = 1 ; learningRatesPerMB = 0.1 ; momentumPerMB = 0.9
             L2RegWeight = 0.0001 ; numMBsToShowResult = 1 }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}" ; randomize = false
               input = {{ features = {{ dim = 192 ; format = "dense" }} ; labels = {{ dim = 10 ; format = "dense" }} }} }}
}}
"""

ATIS_LIKE = """
command = train
deviceId = "cpu"
modelPath = "{out}/model.dnn"
train = {{
    action = "train"
    network = {{
        query = SparseInput {{50}} ; slotLabels = Input {{7}}
        z = DenseLayer {{7}} (RecurrentLSTMLayer {{16}} (EmbeddingLayer {{12}} (query)))
        fused = DenseLayer {{7}} (RecurrentLSTMLayer {{16, allowOptimizedEngine=true}} (EmbeddingLayer {{12}} (query)))
        ce = CrossEntropyWithSoftmax (slotLabels, z) + CrossEntropyWithSoftmax (slotLabels, fused)
        errs = ClassificationError (slotLabels, z)
        criterionNodes = (ce) ; evaluationNodes = (errs)
    }}
    SGD = {{ epochSize = 0 ; minibatchSize = 40 ; maxEpochs = 1 ; learningRatesPerSample = 0.003 ; gradUpdateType = "fsAdaGrad"
             gradientClippingWithTruncation = true ; clippingThresholdPerSample = 15.0 ; numMBsToShowResult = 1 }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}" ; randomize = false
               input = {{ query = {{ dim = 50 ; format = "sparse" }} ; slotLabels = {{ dim = 7 ; format = "sparse" }} }} }}
}}
"""


def _dense_ctf(path, rows, dim, classes, seed):
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for _ in range(rows):
            x = rng.integers(0, 255, dim) if dim == 784 else rng.standard_normal(dim)
            label = np.eye(classes, dtype=int)[rng.integers(classes)]
            fh.write("|features " + " ".join(f"{v:g}" for v in x) + " |labels " + " ".join(map(str, label)) + "\n")


def _sparse_sequences_ctf(path, sequences, seed):
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for s in range(sequences):
            fh.writelines(f"{s} |query {rng.integers(50)}:1 |slotLabels {rng.integers(7)}:1\n" for _ in range(int(rng.integers(2, 9))))


def _criteria(tmp_path, template, data, device):
    out = tmp_path / f"out-{device}"
    cfg = tmp_path / f"cfg-{device}.net"
    cfg.write_text(template.format(out=out, data=data, repo=Path(__file__).resolve().parent.parent))
    log = out / "metrics.jsonl"              # beside the model, where train writes it
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main(["train", str(cfg), f"deviceId={device}"])
    assert code == 0, err.getvalue()
    return [next(iter(r["criterion"].values())) for r in map(json.loads, log.read_text().splitlines())
            if r["event"] == "minibatch"]


@needs_gpu
@pytest.mark.parametrize("family", ["mnist_convnet", "resnet_blocks", "atis_lstm_sparse"])
def test_a_few_training_steps_give_the_same_criterion_on_both_backends(tmp_path, family):
    data = tmp_path / "data.ctf"
    if family == "mnist_convnet":
        _dense_ctf(data, 256, 784, 10, seed=1)
        template = MNIST_LIKE
    elif family == "resnet_blocks":
        _dense_ctf(data, 256, 192, 10, seed=2)
        template = RESNET_LIKE
    else:
        _sparse_sequences_ctf(data, 60, seed=3)
        template = ATIS_LIKE
    cpu = _criteria(tmp_path, template, data, "cpu")
    gpu = _criteria(tmp_path, template, data, 0)
    assert len(cpu) == len(gpu) > 3
    np.testing.assert_allclose(gpu, cpu, rtol=2e-3)


def test_cudnn_is_imported_by_the_backend_module_only_and_the_gpu_services_import_neither():
    root = Path(__file__).resolve().parent.parent / "netlang"
    importers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                       if any(line.strip().startswith(("import cudnn", "from cudnn", "import cupy", "from cupy"))
                              for line in p.read_text(encoding="utf-8").splitlines()))
    assert importers == ["runtime/backend.py"]


# ---- issue 13: the compiled step on a GPU ----------------------------------------------------------

DATA = Path(__file__).resolve().parents[1] / "data"


def _minibatch_criteria(tmp_path, config: str, data: str, extra: list[str]) -> tuple[list[float], str]:
    """The criterion of every minibatch, and what the run printed."""
    out = tmp_path / ("eager" if "--no-cuda-graph" in extra else "graphs")
    printed = io.StringIO()
    with redirect_stdout(printed), redirect_stderr(printed):
        code = main(["train", str(Path(__file__).resolve().parents[1] / config), "deviceId=0", f"DataDir={data}",
                     f"modelPath={out}/model.dnn", "train.SGD.maxEpochs=1", "train.SGD.numMBsToShowResult=1",
                     "--no-progress", *extra])
    assert code == 0, printed.getvalue()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [next(iter(r["criterion"].values())) for r in records if r["event"] == "minibatch"], printed.getvalue()


@needs_gpu
@pytest.mark.parametrize("config,data,steps,captured", [
    ("configs/vision/mnist_convnet.net", "mnist", "train.SGD.epochSize=3200", True),   # 50 minibatches of 64
    # ATIS reads its words as sparse one-hot rows, whose number of non-zeros changes every minibatch:
    # runtime/buckets.py does not bucket those yet, so these steps run eagerly (and say so).
    ("configs/text/atis_slots_lstm.net", "atis", "train.SGD.epochSize=17500", False),  # ~50 minibatches of 350 words
])
def test_replayed_steps_equal_eager_steps_on_the_gpu(tmp_path, config, data, steps, captured):
    if not (DATA / data).exists():
        pytest.skip(f"data/{data} is prepared by benchmarks/gpu/device_check.sh")
    graphs, printed = _minibatch_criteria(tmp_path, config, str(DATA / data), [steps])
    eager, _ = _minibatch_criteria(tmp_path, config, str(DATA / data), [steps, "--no-cuda-graph"])
    assert ("not captured" not in printed) == captured, printed
    assert len(graphs) == len(eager) >= 40
    np.testing.assert_allclose(graphs, eager, rtol=1e-6)


@needs_gpu
def test_cublas_products_equal_cupy_products_in_and_out_of_a_capture():
    import cupy

    backend = select_backend(0, "float")
    assert backend.gemm is not None, "cuBLAS could not be loaded by ctypes"
    a = cupy.random.random((64, 48), dtype=np.float32)
    b = cupy.random.random((48, 80), dtype=np.float32)
    expected = cupy.matmul(a, b)
    cupy.testing.assert_allclose(backend.xp.matmul(a, b), expected, rtol=1e-5)
    cupy.testing.assert_allclose(backend.xp.matmul(b.T, a.T), expected.T, rtol=1e-5)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        out = backend.xp.matmul(a, b)
        stream.begin_capture()
        backend.xp.matmul(a, b, out=out)
        graph = stream.end_capture()
        out.fill(0)
        graph.launch(stream)
        stream.synchronize()
    cupy.testing.assert_allclose(out, expected, rtol=1e-5)
    bf16 = select_backend(0, "bf16")
    cupy.testing.assert_allclose(bf16.xp.matmul(a, b), expected, rtol=2e-2)


@needs_gpu
def test_device_draws_move_on_in_eager_steps_and_in_every_replay_of_a_captured_graph():
    from netlang.runtime.gpu.random import reference_uniform, stream_key

    backend = select_backend(0, "float")
    stream = backend.random_stream(7)
    key = stream_key(7)
    np.testing.assert_array_equal(backend.to_host(stream.random(1024)), reference_uniform(key, 0, 1024))
    np.testing.assert_array_equal(backend.to_host(stream.random(1024)), reference_uniform(key, 1, 1024))
    with backend.graphs.scope():
        handle = backend.graphs.capture(lambda: stream.random(1024))
    replays = [backend.to_host(backend.graphs.launch(handle)) for _ in range(2)]
    np.testing.assert_array_equal(replays[0], reference_uniform(key, 2, 1024))   # the capture drew nothing
    np.testing.assert_array_equal(replays[1], reference_uniform(key, 3, 1024))
    assert stream.state()["counter"] == 4
