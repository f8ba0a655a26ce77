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
