"""Mixed precision (runtime/precision.py, runtime/gpu/gemm.py): bf16/fp16 casts emulated on the CPU,
dynamic loss scaling, float32 master weights, and the cuBLAS argument mapping of the GPU products."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_emulation import EmulatedKernels, have_gxx

from netlang.runtime.backend import cpu_backend
from netlang.runtime.flatbuffer import FlatParameters
from netlang.runtime.gpu.gemm import OP_N, TO_BF16, gemm_call, stored
from netlang.runtime.precision import ComputePrecision, LossScaler, round_to_bf16


def test_bf16_rounds_to_nearest_even_and_keeps_nan():
    one = np.float32(1.0)
    ulp = np.float32(2.0 ** -7)                       # bf16's spacing at 1
    x = np.array([one, one + ulp / 2, one + ulp * 1.5, one + ulp * 0.6, np.nan, np.finfo(np.float32).max], dtype=np.float32)
    y = round_to_bf16(x)
    assert y[0] == 1 and y[1] == 1                    # a tie goes to the even neighbour
    assert y[2] == one + 2 * ulp and y[3] == one + ulp
    assert np.isnan(y[4]) and np.isinf(y[5])
    values = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert np.all(np.abs(round_to_bf16(values) - values) <= np.abs(values) * 2.0 ** -8)


@pytest.mark.skipif(not have_gxx(), reason="g++ runs the CUDA source on the CPU")
def test_the_gpu_bf16_kernel_rounds_as_the_cpu_emulation():
    values = np.random.default_rng(1).standard_normal(4096).astype(np.float32) * 1e3
    values[:3] = [np.nan, np.inf, -0.0]
    bits = np.zeros(values.size, dtype=np.uint16)
    EmulatedKernels().launch(TO_BF16, "to_bf16", np.float32, values.size, (values, bits, np.int64(values.size)))
    widened = (bits.astype(np.uint32) << 16).view(np.float32)
    expected = round_to_bf16(values)
    assert np.isnan(widened[0]) and np.array_equal(widened[1:], expected[1:])


def test_fp16_products_overflow_to_inf_and_bf16_products_do_not():
    a = np.full((2, 2), 300.0, dtype=np.float32)
    assert np.isinf(ComputePrecision("fp16").matmul(a, a)).all()      # 180000 > 65504
    assert np.isfinite(ComputePrecision("bf16").matmul(a, a)).all()
    np.testing.assert_allclose(ComputePrecision("bf16").matmul(a, a), a @ a, rtol=2 ** -7)


def test_the_kernels_products_are_cast_by_the_backend():
    backend = cpu_backend("bf16")
    a = np.float32([[1 + 2 ** -9]])
    assert backend.dtype == np.float32 and backend.xp.matmul(a, a)[0, 0] == 1.0
    assert cpu_backend("float").xp is np


def test_master_weights_stay_float32_under_bf16_and_fp16():
    for precision in ("bf16", "fp16"):
        flat = FlatParameters({"W": (3, 2)}, backend=cpu_backend(precision))
        assert flat.data.dtype == flat.grad.dtype == np.float32


def test_an_overflow_skips_the_step_and_halves_the_scale():
    scaler = LossScaler(initial=1024.0, growth_interval=3)
    assert scaler.update(finite=False) is False and scaler.scale == 512.0
    assert [scaler.update(True) for _ in range(3)] == [True] * 3 and scaler.scale == 1024.0   # grown after 3 good
    assert scaler.good_steps == 0 and scaler.skipped == 1
    restored = LossScaler()
    restored.load_state(scaler.state())
    assert restored.state() == scaler.state()


@pytest.mark.parametrize("a_transposed,b_transposed", [(False, False), (True, False), (False, True), (True, True)])
def test_row_major_products_map_onto_column_major_gemm(a_transposed, b_transposed):
    rng = np.random.default_rng(2)
    m, k, n = 4, 3, 5
    a = rng.standard_normal((k, m)).T if a_transposed else rng.standard_normal((m, k))
    b = rng.standard_normal((n, k)).T if b_transposed else rng.standard_normal((k, n))
    views = [stored((1,) + x.shape, (0,) + x.strides, x.itemsize) for x in (a, b)]
    call = gemm_call(views[0], views[1], m, n, k, 1)
    # A row-major array read column-major holds its transpose when it is C-ordered, itself when F-ordered.
    held = lambda x, view: x.T if view.transposed else x                       # noqa: E731
    op = lambda matrix, trans: matrix if trans == OP_N else matrix.T          # noqa: E731
    # cuBLAS: C (call.m × call.n, column-major) = op(first) · op(second); first is b, second a.
    c_column_major = op(held(b, views[1]), call.transa) @ op(held(a, views[0]), call.transb)
    assert c_column_major.shape == (call.m, call.n) == (n, m) and call.ldc == n
    np.testing.assert_allclose(c_column_major.T, a @ b)
