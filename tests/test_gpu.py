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

import itertools
import math

import numpy as np
import pytest

from cuda_emulation import EmulatedKernels, have_gxx, nvcc_compiles, nvcc_path
from netlang.runtime.backend import NumpyBackend, gpu_available, select_backend
from netlang.runtime.flatbuffer import FlatParameters
from netlang.runtime.gpu import updates
from netlang.runtime.learners import SGDSettings, create_learner
from netlang.runtime.schedules import LearningRateSchedule, MomentumSchedule, Schedule

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


def _settings(update: str, **more) -> SGDSettings:
    lr = LearningRateSchedule(per_sample=Schedule.parse("0.01*2:0.004"))
    momentum = MomentumSchedule(per_minibatch=Schedule.parse("0.9"))
    return SGDSettings(learning_rate=lr, momentum=momentum, grad_update_type=update, **more)


def _learner(backend, update, dtype, multipliers, **more):
    lr_multipliers = {"frozen": 0.0, **({"b": 0.5} if multipliers else {})}
    params = FlatParameters(SHAPES, backend=backend, dtype=dtype, lr_multipliers=lr_multipliers,
                            reg_multipliers={"V": 0.0, "W": 2.0} if multipliers else None)
    rng = np.random.default_rng(3)
    params.copy_from({k: rng.standard_normal(v) for k, v in SHAPES.items()})
    return create_learner(_settings(update, **more), params)


VARIANTS = {
    "plain": {},
    "nesterov": {"use_nesterov": True},
    "truncate_l1_l2": {"clipping_threshold_per_sample": 0.05, "l1_reg_weight": 1e-3, "l2_reg_weight": 1e-2},
    "norm_clip": {"clipping_threshold_per_sample": 0.02, "gradient_clipping_with_truncation": False},
    "no_ave_multiplier": {"norm_with_ave_multiplier": False, "l2_reg_weight": 1e-3},
    "noise": {"gaussian_noise_inject_std": 0.01, "noise_seed": 4},
}


@needs_gxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("update", ["none", "adagrad", "rmsProp", "fsAdagrad", "adam", "adadelta"])
def test_a_fused_update_equals_the_numpy_learner(update, variant, dtype):
    if variant == "nesterov" and update != "none":
        pytest.skip("useNAG belongs to plain SGD")
    for multipliers in (False, True):
        cpu = _learner(NumpyBackend(dtype), update, dtype, multipliers, **VARIANTS[variant])
        gpu = _learner(EmulatedGpuBackend(dtype), update, dtype, multipliers, **VARIANTS[variant])
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

from netlang.ops import conv as conv_ops  # noqa: E402
from netlang.ops import registry  # noqa: E402
from test_op_registry import Case  # noqa: E402

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
