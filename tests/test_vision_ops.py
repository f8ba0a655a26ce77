"""Convolution, pooling and normalisation ops against direct NumPy references.

The references are written plainly: nested loops over output positions and kernel offsets on tiny
inputs, reading an input cell only when it lies inside the input (padding is zero by omission).
Every op is checked forward, and backward twice: against central finite differences of
sum(y * R) and against the reference's own gradient loops. Row-major layouts throughout: an
image batch is (N, C, H, W), a weight (M, C, kh, kw).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from netlang.ops import conv, registry
from netlang.ops.registry import OpContext, ShapeMismatch, ShapeResult
from netlang.runtime.backend import cpu_backend

RNG_SEED = 7
CPU = cpu_backend()


def rng():
    return np.random.default_rng(RNG_SEED)


def ctx_for(dyns, training=True, mask=None, state=None):
    return OpContext(backend=CPU, dyn=list(dyns), out_dyn=max(dyns), training=training, mask=mask,
                     state={} if state is None else state)


def run(name, xs, attrs, dyns, training=True, mask=None):
    """Forward and backward of op `name` with gy = R; returns (y, grads, R)."""
    op = registry.get(name)
    ctx = ctx_for(dyns, training, mask)
    y = registry.apply_forward(op, ctx, [x.copy() for x in xs], attrs, 0)
    weights = np.random.default_rng(RNG_SEED + 1).standard_normal(y.shape).astype(y.dtype)
    grads = registry.apply_backward(op, ctx, [x.copy() for x in xs], y, weights, attrs, 0)
    return y, grads, weights


def finite_difference(name, xs, attrs, dyns, i, weights, training=True, mask=None, eps=1e-6):
    op = registry.get(name)
    xs = [x.copy() for x in xs]
    grad = np.zeros_like(xs[i])
    flat, gflat = xs[i].reshape(-1), grad.reshape(-1)

    def value():
        ctx = ctx_for(dyns, training, mask)
        return float(np.sum(registry.apply_forward(op, ctx, [x.copy() for x in xs], attrs, 0) * weights))

    for k in range(flat.size):
        keep = flat[k]
        flat[k] = keep + eps
        up = value()
        flat[k] = keep - eps
        down = value()
        flat[k] = keep
        gflat[k] = (up - down) / (2 * eps)
    return grad


def assert_close(actual, expected, tol=1e-7):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(expected)))))


# ---- direct references ---------------------------------------------------------------------------

def window_cells(o, stride, lower, dilation, kernel):
    """(kernel offset, input cell) pairs of output position o (all spatial axes)."""
    for k in itertools.product(*(range(n) for n in kernel)):
        yield k, tuple(oi * s - lo + ki * d for oi, s, lo, ki, d in zip(o, stride, lower, k, dilation))


def inside(cell, sizes):
    return all(0 <= c < n for c, n in zip(cell, sizes))


def ref_conv(x, w, out, stride, lower, dilation):
    """y[n, m, o] = Σ_c,k w[m, c, k] · x[n, c, o·stride - lower + k·dilation]."""
    n_, c_ = x.shape[:2]
    m_ = w.shape[0]
    sizes, kernel = x.shape[2:], w.shape[2:]
    y = np.zeros((n_, m_) + tuple(out))
    for n, m, o in itertools.product(range(n_), range(m_), itertools.product(*(range(v) for v in out))):
        total = 0.0
        for k, cell in window_cells(o, stride, lower, dilation, kernel):
            if inside(cell, sizes):
                for c in range(c_):
                    total += w[(m, c) + k] * x[(n, c) + cell]
        y[(n, m) + o] = total
    return y


def ref_conv_grads(x, w, gy, stride, lower, dilation):
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    n_, c_ = x.shape[:2]
    m_ = w.shape[0]
    out = gy.shape[2:]
    for n, m, o in itertools.product(range(n_), range(m_), itertools.product(*(range(v) for v in out))):
        for k, cell in window_cells(o, stride, lower, dilation, w.shape[2:]):
            if inside(cell, x.shape[2:]):
                for c in range(c_):
                    gx[(n, c) + cell] += w[(m, c) + k] * gy[(n, m) + o]
                    gw[(m, c) + k] += x[(n, c) + cell] * gy[(n, m) + o]
    return gx, gw


def ref_conv_transpose(x, w, out, stride, lower, dilation):
    """The adjoint: y[n, c, o·stride - lower + k·dilation] += w[m, c, k] · x[n, m, o]."""
    n_, m_ = x.shape[:2]
    c_ = w.shape[1]
    y = np.zeros((n_, c_) + tuple(out))
    for n, m, o in itertools.product(range(n_), range(m_), itertools.product(*(range(v) for v in x.shape[2:]))):
        for k, cell in window_cells(o, stride, lower, dilation, w.shape[2:]):
            if inside(cell, out):
                for c in range(c_):
                    y[(n, c) + cell] += w[(m, c) + k] * x[(n, m) + o]
    return y


def ref_pool(x, kind, kernel, stride, lower, out, count_region=None):
    """Max or average over each window's cells inside the input; the average divides by the
    cells inside `count_region` (per-axis [low, high)) when given (includePad)."""
    n_, c_ = x.shape[:2]
    y = np.zeros((n_, c_) + tuple(out))
    for n, c, o in itertools.product(range(n_), range(c_), itertools.product(*(range(v) for v in out))):
        cells = [cell for _, cell in window_cells(o, stride, lower, (1,) * len(kernel), kernel)]
        values = [x[(n, c) + cell] for cell in cells if inside(cell, x.shape[2:])]
        if kind == "max":
            y[(n, c) + o] = max(values)
        elif count_region is None:
            y[(n, c) + o] = sum(values) / len(values)
        else:
            counted = [cell for cell in cells if all(lo <= v < hi for v, (lo, hi) in zip(cell, count_region))]
            y[(n, c) + o] = sum(values) / len(counted)
    return y


def ref_first_max_cells(x, kernel, stride, lower, out):
    """{(n, c, o): input cell of the first maximum of that window}."""
    picks = {}
    for n, c, o in itertools.product(range(x.shape[0]), range(x.shape[1]), itertools.product(*(range(v) for v in out))):
        best = None
        for _, cell in window_cells(o, stride, lower, (1,) * len(kernel), kernel):
            if inside(cell, x.shape[2:]) and (best is None or x[(n, c) + cell] > x[(n, c) + best]):
                best = cell
        picks[(n, c, o)] = best
    return picks


def ref_batch_norm(x, scale, bias, mean, var, eps, channel_axis=1):
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    r = lambda v: np.asarray(v).reshape(shape)
    return (x - r(mean)) / np.sqrt(r(var) + eps) * r(scale) + r(bias)


# ---- geometry ------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,kernel,stride,lower,upper,out", [
    (5, 3, 1, 1, 1, 5),          # odd kernel: symmetric
    (5, 2, 1, 0, 1, 5),          # even kernel: the extra cell of padding goes above
    (5, 4, 1, 1, 2, 5),
    (32, 3, 2, 1, 0, 16),        # stride 2: CNTK centres the first window, padding below
    (7, 3, 2, 1, 1, 4),
    (6, 1, 2, 0, -1, 3),         # 1x1 at stride 2 crops the last cell
])
def test_auto_padding_follows_cntk_centring(size, kernel, stride, lower, upper, out):
    axis = conv.window_axis(size, kernel, stride, auto_pad=True)
    assert (axis.out, axis.lower, axis.upper) == (out, lower, upper)


def test_explicit_padding_gives_floor_output_length():
    axis = conv.window_axis(7, 3, stride=2, lower=1, upper=0)
    assert axis.out == (7 + 1 - 3) // 2 + 1


def test_ceil_out_dim_adds_a_partial_window():
    assert conv.window_axis(5, 2, stride=2).out == 2
    assert conv.window_axis(5, 2, stride=2, ceil_out=True).out == 3


def test_ceil_out_dim_never_starts_a_window_past_the_input():
    assert conv.window_axis(5, 2, stride=2, lower=1, upper=1, ceil_out=True).out == 3


def test_dilation_widens_the_window():
    assert conv.window_axis(7, 3, dilation=2).out == 3


def test_kernel_larger_than_padded_input_is_rejected():
    with pytest.raises(ShapeMismatch, match="does not fit"):
        conv.window_axis(2, 5)


# ---- convolution ---------------------------------------------------------------------------------

CONV_CASES = {
    # name: (x (N, C, H, W), kernel (kh, kw), attrs, stride (h, w), lower (h, w), dilation, out (h, w))
    "valid": ((2, 2, 5, 6), (3, 3), {"autoPadding": False}, (1, 1), (0, 0), (1, 1), (3, 4)),
    "same": ((2, 2, 5, 6), (3, 3), {}, (1, 1), (1, 1), (1, 1), (5, 6)),
    "same stride 2": ((2, 2, 7, 6), (3, 3), {"strideShape": 2}, (2, 2), (1, 1), (1, 1), (4, 3)),
    "even kernel": ((1, 2, 4, 5), (2, 2), {}, (1, 1), (0, 0), (1, 1), (4, 5)),
    "explicit pads": ((2, 1, 4, 5), (3, 3), {"autoPadding": False, "lowerPad": (1, 0), "upperPad": (2, 1)},
                      (1, 1), (0, 1), (1, 1), (3, 6)),
    "dilation": ((1, 2, 7, 7), (3, 3), {"autoPadding": False, "dilation": 2}, (1, 1), (0, 0), (2, 2), (3, 3)),
    "1x1 stride 2": ((2, 3, 6, 5), (1, 1), {"strideShape": 2}, (2, 2), (0, 0), (1, 1), (3, 3)),
}


def conv_inputs(case):
    x_shape, kernel, attrs, *_ = CONV_CASES[case]
    r = rng()
    x = r.standard_normal(x_shape)
    w = r.standard_normal((3, x_shape[1]) + kernel)
    return x, w, {"kernelShape": kernel[::-1], "mapCount": 3, **attrs}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_convolution_matches_direct_loops(case):
    x, w, attrs = conv_inputs(case)
    _, _, _, stride, lower, dilation, out = CONV_CASES[case]
    y, grads, gy = run("Convolution", [w, x], attrs, [0, 1])
    assert_close(y, ref_conv(x, w, out, stride, lower, dilation))
    gx, gw = ref_conv_grads(x, w, gy, stride, lower, dilation)
    assert_close(grads[1], gx)
    assert_close(grads[0], gw)


@pytest.mark.parametrize("case", ["same", "same stride 2", "explicit pads", "dilation"])
def test_convolution_gradients_match_finite_differences(case):
    x, w, attrs = conv_inputs(case)
    _, grads, gy = run("Convolution", [w, x], attrs, [0, 1])
    assert_close(grads[1], finite_difference("Convolution", [w, x], attrs, [0, 1], 1, gy), 1e-6)
    assert_close(grads[0], finite_difference("Convolution", [w, x], attrs, [0, 1], 0, gy), 1e-6)


def test_one_dimensional_convolution_matches_direct_loops():
    r = rng()
    x, w = r.standard_normal((2, 2, 9)), r.standard_normal((3, 2, 3))
    attrs = {"kernelShape": (3,), "mapCount": 3, "strideShape": 2, "autoPadding": False}
    y, grads, gy = run("Convolution", [w, x], attrs, [0, 1])
    assert_close(y, ref_conv(x, w, (4,), (2,), (0,), (1,)))
    assert_close(grads[1], ref_conv_grads(x, w, gy, (2,), (0,), (1,))[0])


def test_three_dimensional_convolution_matches_direct_loops():
    r = rng()
    x, w = r.standard_normal((1, 2, 3, 4, 4)), r.standard_normal((2, 2, 2, 3, 3))
    attrs = {"kernelShape": (3, 3, 2), "mapCount": 2, "autoPadding": (True, True, False)}
    y, grads, gy = run("Convolution", [w, x], attrs, [0, 1])
    assert_close(y, ref_conv(x, w, (2, 4, 4), (1, 1, 1), (0, 1, 1), (1, 1, 1)))
    gx, gw = ref_conv_grads(x, w, gy, (1, 1, 1), (0, 1, 1), (1, 1, 1))
    assert_close(grads[1], gx)
    assert_close(grads[0], gw)


def test_kernel_naming_the_channel_axis_equals_the_spatial_kernel():
    x, w, attrs = conv_inputs("same")
    y_spatial, _, _ = run("Convolution", [w, x], attrs, [0, 1])
    y_channel, _, _ = run("Convolution", [w, x], {**attrs, "kernelShape": (3, 3, 2)}, [0, 1])
    assert_close(y_channel, y_spatial)


def test_legacy_matrix_weight_equals_the_tensor_weight():
    x, w, attrs = conv_inputs("valid")
    matrix = w.reshape(3, -1).T.copy()                  # BS (mapCount, kernel elements)
    y_tensor, g_tensor, _ = run("Convolution", [w, x], attrs, [0, 1])
    y_matrix, g_matrix, _ = run("Convolution", [matrix, x], attrs, [0, 1])
    assert_close(y_matrix, y_tensor)
    assert_close(g_matrix[0], g_tensor[0].reshape(3, -1).T)


def test_sequence_axes_are_folded_into_the_batch():
    x, w, attrs = conv_inputs("same")
    seq = np.stack([x, 2 * x])                          # (T, N, C, H, W)
    y, _, _ = run("Convolution", [w, seq], attrs, [0, 2])
    single, _, _ = run("Convolution", [w, x], attrs, [0, 1])
    assert_close(y[1], 2 * single)


def test_column_blocks_do_not_change_the_result(monkeypatch):
    x, w, attrs = conv_inputs("same stride 2")
    y, grads, _ = run("Convolution", [w, x], attrs, [0, 1])
    monkeypatch.setattr(conv, "COLUMN_BLOCK_BYTES", 1)  # one sample per block
    y_blocks, grads_blocks, _ = run("Convolution", [w, x], attrs, [0, 1])
    y_chunk, _, _ = run("Convolution", [w, x], {**attrs, "maxTempMemSizeInSamples": 1}, [0, 1])
    assert_close(y_blocks, y)
    assert_close(y_chunk, y)
    assert_close(grads_blocks[0], grads[0])
    assert_close(grads_blocks[1], grads[1])


def test_float32_convolution_keeps_its_dtype():
    x, w, attrs = conv_inputs("same")
    y64, _, _ = run("Convolution", [w, x], attrs, [0, 1])
    y32, g32, _ = run("Convolution", [w.astype(np.float32), x.astype(np.float32)], attrs, [0, 1])
    assert y32.dtype == np.float32 and g32[0].dtype == np.float32 and g32[1].dtype == np.float32
    assert_close(y32, y64, 1e-4)


def test_weight_input_channels_are_inferred():
    result = registry.get("Convolution").shape([(3, 3, 0, 8), (32, 32, 3)], {"kernelShape": (3, 3), "mapCount": 8})
    assert isinstance(result, ShapeResult)
    assert result.out == (32, 32, 8) and result.infer == {0: (3, 3, 3, 8)}


def test_map_count_is_read_from_the_weight_when_zero():
    rule = registry.get("Convolution").shape
    assert rule([(5, 5, 1, 16), (28, 28, 1)], {"kernelShape": (5, 5), "mapCount": 0}) == (28, 28, 16)


def test_wrong_weight_shape_is_a_shape_error():
    with pytest.raises(ShapeMismatch, match="needs"):
        registry.get("Convolution").shape([(3, 3, 4, 8), (32, 32, 3)], {"kernelShape": (3, 3), "mapCount": 8})


def test_unshared_kernels_are_refused():
    with pytest.raises(ShapeMismatch, match="sharing"):
        registry.get("Convolution").shape([(3, 3, 3, 8), (32, 32, 3)],
                                          {"kernelShape": (3, 3), "mapCount": 8, "sharing": False})


def test_malformed_attributes_are_shape_errors_not_crashes():
    with pytest.raises(ShapeMismatch, match="whole numbers"):
        registry.get("Convolution").shape([(3, 3, 2, 4), (8, 8, 2)], {"kernelShape": ("a", 3), "mapCount": 4})
    with pytest.raises(ShapeMismatch, match="epsilon"):
        registry.get("BatchNormalization").shape([(4,), (4,), (4,), (4,), (4,), (1,)], {"epsilon": "small"})


def test_cntk_node_record_names_are_accepted():
    rule = registry.get("Convolution").shape
    attrs = {"kernelShape": (3, 3), "mapCount": (4,), "strideShape": (2,), "dimPadding": (True,),
             "kernelDims": (3, 3), "mapDims": 4, "stride": 2, "autoPadding": True}
    assert rule([(3, 3, 2, 4), (8, 8, 2)], attrs) == (4, 4, 4)


# ---- transposed convolution ----------------------------------------------------------------------

TRANSPOSE_CASES = {
    # name: (x (N, M, h, w), kernel, attrs, stride, lower, out (H, W))
    "stride 2 valid": ((2, 3, 3, 2), (3, 3), {"strideShape": 2, "autoPadding": False}, (2, 2), (0, 0), (7, 5)),
    "stride 1 same": ((2, 3, 4, 3), (3, 3), {}, (1, 1), (1, 1), (4, 3)),
    "output shape": ((1, 3, 3, 2), (3, 3), {"strideShape": 2, "outputShape": (4, 6, 2)}, (2, 2), (1, 1), (6, 4)),
}


@pytest.mark.parametrize("case", list(TRANSPOSE_CASES))
def test_transposed_convolution_matches_direct_loops(case):
    x_shape, kernel, extra, stride, lower, out = TRANSPOSE_CASES[case]
    r = rng()
    x = r.standard_normal(x_shape)
    w = r.standard_normal((x_shape[1], 2) + kernel)     # (M, C_out, kh, kw)
    attrs = {"kernelShape": kernel[::-1] + (2,), "mapCount": x_shape[1], **extra}
    y, grads, gy = run("ConvolutionTranspose", [w, x], attrs, [0, 1])
    assert_close(y, ref_conv_transpose(x, w, out, stride, lower, (1, 1)))
    # The adjoint of the adjoint: x's gradient is the forward convolution of gy.
    assert_close(grads[1], ref_conv(gy, w, x_shape[2:], stride, lower, (1, 1)))
    assert_close(grads[0], finite_difference("ConvolutionTranspose", [w, x], attrs, [0, 1], 0, gy), 1e-6)
    assert_close(grads[1], finite_difference("ConvolutionTranspose", [w, x], attrs, [0, 1], 1, gy), 1e-6)


def test_transpose_attribute_reaches_the_same_op():
    x_shape, kernel, extra, *_ = TRANSPOSE_CASES["stride 2 valid"]
    r = rng()
    x, w = r.standard_normal(x_shape), r.standard_normal((3, 2) + kernel)
    attrs = {"kernelShape": (3, 3, 2), "mapCount": 3, **extra}
    y_op, _, _ = run("ConvolutionTranspose", [w, x], attrs, [0, 1])
    y_attr, _, _ = run("Convolution", [w, x], {**attrs, "transpose": True}, [0, 1])
    assert_close(y_attr, y_op)


def test_output_shape_that_does_not_convolve_back_is_a_shape_error():
    with pytest.raises(ShapeMismatch, match="convolves to"):
        registry.get("ConvolutionTranspose").shape(
            [(3, 3, 2, 3), (4, 4, 3)], {"kernelShape": (3, 3, 2), "mapCount": 3, "strideShape": 2,
                                        "outputShape": (12, 12, 2)})


# ---- pooling -------------------------------------------------------------------------------------

POOL_CASES = {
    # name: (x shape, attrs, kernel (h, w), stride, lower, out, count_region or None)
    "max 2x2": ((2, 2, 4, 6), {"poolKind": "max", "kernelShape": (2, 2), "strideShape": 2, "autoPadding": False},
                (2, 2), (2, 2), (0, 0), (2, 3), None),
    "max same stride 2": ((1, 2, 5, 5), {"poolKind": "max", "kernelShape": (3, 3), "strideShape": 2},
                          (3, 3), (2, 2), (1, 1), (3, 3), None),
    "average same": ((2, 1, 4, 5), {"poolKind": "average", "kernelShape": (3, 3)},
                     (3, 3), (1, 1), (1, 1), (4, 5), None),
    "average include pad": ((2, 1, 4, 5), {"poolKind": "average", "kernelShape": (3, 3), "includePad": True},
                            (3, 3), (1, 1), (1, 1), (4, 5), ((-1, 5), (-1, 6))),
    "average ceil": ((1, 2, 5, 5), {"poolKind": "average", "kernelShape": (2, 2), "strideShape": 2,
                                    "autoPadding": False, "ceilOutDim": True}, (2, 2), (2, 2), (0, 0), (3, 3), None),
    "average explicit pads include pad": (
        (1, 1, 5, 4), {"poolKind": "average", "kernelShape": (2, 2), "strideShape": 2, "autoPadding": False,
                       "lowerPad": 1, "upperPad": (0, 1), "includePad": True},
        (2, 2), (2, 2), (1, 1), (3, 2), ((-1, 6), (-1, 4))),
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pooling_matches_direct_loops(case):
    x_shape, attrs, kernel, stride, lower, out, region = POOL_CASES[case]
    x = rng().standard_normal(x_shape)
    y, grads, gy = run("Pooling", [x], attrs, [1])
    assert_close(y, ref_pool(x, attrs["poolKind"], kernel, stride, lower, out, region))
    assert_close(grads[0], finite_difference("Pooling", [x], attrs, [1], 0, gy), 1e-6)


def test_max_pooling_gradient_goes_to_the_first_maximum():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = 5.0                 # a tie: the first in row-major order wins
    attrs = {"poolKind": "max", "kernelShape": (2, 2), "strideShape": 2, "autoPadding": False}
    op = registry.get("Pooling")
    ctx = ctx_for([1])
    y = registry.apply_forward(op, ctx, [x], attrs, 3)
    gy = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    gx = registry.apply_backward(op, ctx, [x], y, gy, attrs, 3)[0]
    expected = np.zeros_like(x)
    for (n, c, o), cell in ref_first_max_cells(x, (2, 2), (2, 2), (0, 0), (2, 2)).items():
        expected[(n, c) + cell] += gy[(n, c) + o]
    assert_close(gx, expected)
    assert gx[0, 0, 0, 1] == 1.0 and gx[0, 0, 1, 1] == 0.0


def test_max_padding_never_wins():
    x = -np.ones((1, 1, 3, 3)) - rng().uniform(size=(1, 1, 3, 3))
    y, _, _ = run("Pooling", [x], {"poolKind": "max", "kernelShape": (3, 3)}, [1])
    assert np.all(y < 0)


def test_global_pooling_reduces_whole_axes():
    x = rng().standard_normal((2, 3, 4, 5))
    y_avg, _, _ = run("Pooling", [x], {"poolKind": "average", "kernelShape": (0, 0)}, [1])
    y_max, _, _ = run("Pooling", [x], {"poolKind": "max", "kernelShape": (0, 0)}, [1])
    assert_close(y_avg, x.mean(axis=(2, 3), keepdims=True))
    assert_close(y_max, x.max(axis=(2, 3), keepdims=True))


def test_pooling_kernel_on_the_channel_axis_is_maxout():
    x = rng().standard_normal((2, 4, 3, 3))
    attrs = {"poolKind": "max", "kernelShape": (1, 1, 2), "strideShape": (1, 1, 2), "autoPadding": False}
    y, _, _ = run("Pooling", [x], attrs, [1])
    assert_close(y, np.maximum(x[:, 0::2], x[:, 1::2]))


def test_legacy_max_pooling_equals_pooling():
    x = rng().standard_normal((2, 2, 6, 5))
    legacy = {"windowWidth": 2, "windowHeight": 3, "horizontalSubsample": 2, "verticalSubsample": 3}
    y_legacy, _, _ = run("MaxPooling", [x], legacy, [1])
    y, _, _ = run("Pooling", [x], {"poolKind": "max", "kernelShape": (2, 3), "strideShape": (2, 3),
                                   "autoPadding": False}, [1])
    assert_close(y_legacy, y)


def test_window_in_padding_only_is_a_shape_error():
    with pytest.raises(ShapeMismatch, match="padding"):
        registry.get("Pooling").shape([(4, 4, 1)], {"poolKind": "max", "kernelShape": (2, 2), "autoPadding": False,
                                                    "lowerPad": 2})


def test_unknown_pool_kind_is_a_shape_error():
    with pytest.raises(ShapeMismatch, match="poolKind"):
        registry.get("Pooling").shape([(4, 4, 1)], {"poolKind": "median", "kernelShape": (2, 2)})


# ---- unpooling -----------------------------------------------------------------------------------

@pytest.mark.parametrize("attrs,kernel,stride,lower,out", [
    ({"kernelShape": (2, 2), "strideShape": 2, "autoPadding": False}, (2, 2), (2, 2), (0, 0), (2, 3)),
    ({"kernelShape": (3, 3), "strideShape": 2}, (3, 3), (2, 2), (1, 1), (2, 3)),      # overlapping windows
])
def test_max_unpooling_places_values_at_the_pooled_maximum(attrs, kernel, stride, lower, out):
    r = rng()
    pool_input = r.standard_normal((2, 2, 4, 6))
    values = r.standard_normal((2, 2) + out)
    y, grads, gy = run("MaxUnpooling", [values, pool_input], attrs, [1, 1])
    expected = np.zeros_like(pool_input)
    picks = ref_first_max_cells(pool_input, kernel, stride, lower, out)
    for (n, c, o), cell in picks.items():
        expected[(n, c) + cell] += values[(n, c) + o]
    assert_close(y, expected)
    assert grads[1] is None
    gathered = np.zeros_like(values)
    for (n, c, o), cell in picks.items():
        gathered[(n, c) + o] = gy[(n, c) + cell]
    assert_close(grads[0], gathered)
    assert_close(grads[0], finite_difference("MaxUnpooling", [values, pool_input], attrs, [1, 1], 0, gy), 1e-6)


def test_unpooling_values_must_match_the_pooled_shape():
    with pytest.raises(ShapeMismatch, match="MaxUnpooling"):
        registry.get("MaxUnpooling").shape([(3, 3, 2), (4, 4, 2)], {"kernelShape": (2, 2), "strideShape": 2,
                                                                     "autoPadding": False})


# ---- batch normalisation -------------------------------------------------------------------------

def bn_inputs(channels=3, seen=0.0, shape=(4, 3, 2, 2)):
    r = rng()
    x = r.standard_normal(shape) * 2 + 1
    scale, bias = r.uniform(0.5, 1.5, channels), r.standard_normal(channels)
    run_mean, run_var = r.standard_normal(channels), r.uniform(0.5, 2, channels)
    return [x, scale, bias, run_mean, run_var, np.array([seen])]


def bn_forward(xs, attrs, training=True, dyns=(1, 0, 0, 0, 0, 0), mask=None):
    op = registry.get("BatchNormalization")
    ctx = ctx_for(dyns, training, mask)
    return registry.apply_forward(op, ctx, xs, attrs, 3), ctx


def test_batch_norm_training_uses_batch_statistics_per_channel():
    xs = bn_inputs()
    x = xs[0]
    y, _ = bn_forward([a.copy() for a in xs], {"spatial": True})
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    assert_close(y, ref_batch_norm(x, xs[1], xs[2], mean, var, 1e-5))


def test_batch_norm_per_element_statistics():
    xs = bn_inputs()
    x = xs[0]
    sample = x.shape[1:]
    params = [rng().uniform(0.5, 1.5, sample), rng().standard_normal(sample)]
    inputs = [x, *params, np.zeros(sample), np.ones(sample), np.zeros(1)]
    y, _ = bn_forward(inputs, {})
    expected = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-5) * params[0] + params[1]
    assert_close(y, expected)


def test_batch_norm_time_constant_zero_keeps_the_last_batch():
    xs = bn_inputs(seen=100.0)
    x = xs[0]
    bn_forward(xs, {"spatial": True})
    m = x.shape[0] * x.shape[2] * x.shape[3]
    assert_close(xs[3], x.mean(axis=(0, 2, 3)))
    assert_close(xs[4], x.var(axis=(0, 2, 3)) * m / (m - 1))      # unbiased
    assert xs[5][0] == 100.0 + x.shape[0]


def test_batch_norm_time_constant_averages_exponentially():
    xs = bn_inputs(seen=10.0)
    x, old_mean, old_var = xs[0], xs[3].copy(), xs[4].copy()
    bn_forward(xs, {"spatial": True, "normalizationTimeConstant": 50})
    f = 1 - math.exp(-x.shape[0] / 50)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    assert_close(xs[3], (1 - f) * old_mean + f * x.mean(axis=(0, 2, 3)))
    assert_close(xs[4], (1 - f) * old_var + f * x.var(axis=(0, 2, 3)) * m / (m - 1))


def test_batch_norm_first_batch_replaces_the_running_statistics():
    xs = bn_inputs(seen=0.0)
    bn_forward(xs, {"spatial": True, "normalizationTimeConstant": 5000})
    assert_close(xs[3], xs[0].mean(axis=(0, 2, 3)))


def test_batch_norm_negative_time_constant_is_a_cumulative_average():
    xs = bn_inputs(seen=0.0)
    first, second = xs[0], xs[0][::-1] * 3 - 2
    attrs = {"spatial": True, "normalizationTimeConstant": -1}
    bn_forward(xs, attrs)
    bn_forward([second] + xs[1:], attrs)
    assert_close(xs[3], np.concatenate([first, second]).mean(axis=(0, 2, 3)))
    assert xs[5][0] == 2 * first.shape[0]


def test_batch_norm_infinite_time_constant_freezes_the_statistics():
    xs = bn_inputs(seen=10.0)
    before = xs[3].copy()
    bn_forward(xs, {"spatial": True, "normalizationTimeConstant": math.inf})
    assert_close(xs[3], before)


def test_batch_norm_evaluation_uses_running_statistics_and_updates_nothing():
    xs = bn_inputs(seen=10.0)
    before = [a.copy() for a in xs]
    y, _ = bn_forward(xs, {"spatial": True}, training=False)
    assert_close(y, ref_batch_norm(xs[0], xs[1], xs[2], xs[3], xs[4], 1e-5))
    for a, b in zip(xs, before):
        assert_close(a, b)


def test_batch_norm_evaluation_before_any_training_is_finite():
    xs = bn_inputs(seen=0.0)
    xs[4][:] = 0.0
    y, _ = bn_forward(xs, {"spatial": True}, training=False)
    x = xs[0]
    assert_close(y, ref_batch_norm(x, xs[1], xs[2], x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)), 1e-5))


def test_batch_norm_infinite_blend_normalises_with_running_statistics_in_training():
    xs = bn_inputs(seen=10.0)
    attrs = {"spatial": True, "blendTimeConstant": math.inf, "normalizationTimeConstant": math.inf}
    y, _ = bn_forward([a.copy() for a in xs], attrs)
    assert_close(y, ref_batch_norm(xs[0], xs[1], xs[2], xs[3], xs[4], 1e-5))


def test_batch_norm_blend_mixes_running_and_batch_statistics():
    xs = bn_inputs(seen=10.0)
    x = xs[0]
    attrs = {"spatial": True, "blendTimeConstant": 8.0}
    y, _ = bn_forward([a.copy() for a in xs], attrs)
    b = 8.0 / (8.0 + x.shape[0])
    mean = b * xs[3] + (1 - b) * x.mean(axis=(0, 2, 3))
    var = b * xs[4] + (1 - b) * x.var(axis=(0, 2, 3))
    assert_close(y, ref_batch_norm(x, xs[1], xs[2], mean, var, 1e-5))


@pytest.mark.parametrize("attrs,training,seen", [
    ({"spatial": True}, True, 0.0),
    ({"spatial": True, "blendTimeConstant": 8.0}, True, 10.0),      # gradient through blended statistics
    ({"spatial": True}, False, 10.0),
])
def test_batch_norm_gradients_match_finite_differences(attrs, training, seen):
    xs = bn_inputs(seen=seen)
    dyns = [1, 0, 0, 0, 0, 0]
    _, grads, gy = run("BatchNormalization", xs, attrs, dyns, training)
    for i in (0, 1, 2):
        numeric = finite_difference("BatchNormalization", xs, attrs, dyns, i, gy, training)
        assert_close(grads[i], numeric, 1e-6)
    assert grads[3] is None and grads[4] is None and grads[5] is None


def test_batch_norm_training_gradient_matches_the_textbook_formula():
    xs = bn_inputs()
    x, scale = xs[0], xs[1]
    _, grads, gy = run("BatchNormalization", xs, {"spatial": True}, [1, 0, 0, 0, 0, 0])
    axes = (0, 2, 3)
    mean, inv_std = x.mean(axis=axes, keepdims=True), 1 / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5)
    x_hat = (x - mean) * inv_std
    g = gy * scale.reshape(1, -1, 1, 1)
    expected = inv_std * (g - g.mean(axis=axes, keepdims=True) - x_hat * (g * x_hat).mean(axis=axes, keepdims=True))
    assert_close(grads[0], expected)
    assert_close(grads[1], (gy * x_hat).sum(axis=axes))
    assert_close(grads[2], gy.sum(axis=axes))


def test_batch_norm_statistics_leave_out_padded_sequence_steps():
    r = rng()
    x = r.standard_normal((3, 2, 4))                  # (T, N, C): sequences of vectors
    mask = np.array([[True, True], [True, True], [True, False]])
    x[2, 1] = 1e3                                     # padding garbage must not count
    xs = [x, np.ones(4), np.zeros(4), np.zeros(4), np.ones(4), np.zeros(1)]
    y, _ = bn_forward(xs, {"spatial": True}, dyns=(2, 0, 0, 0, 0, 0), mask=mask)
    valid = x[mask]
    assert_close(y[mask], (valid - valid.mean(axis=0)) / np.sqrt(valid.var(axis=0) + 1e-5))
    assert xs[5][0] == 5


def test_batch_norm_gradient_with_padded_sequence_steps_matches_finite_differences():
    r = rng()
    x = r.standard_normal((3, 2, 2))
    mask = np.array([[True, True], [True, True], [True, False]])
    xs = [x, r.uniform(0.5, 1.5, 2), r.standard_normal(2), np.zeros(2), np.ones(2), np.zeros(1)]
    dyns = [2, 0, 0, 0, 0, 0]
    _, grads, gy = run("BatchNormalization", xs, {"spatial": True}, dyns, mask=mask)
    for i in (0, 1, 2):
        numeric = finite_difference("BatchNormalization", xs, {"spatial": True}, dyns, i, gy, mask=mask)
        assert_close(grads[i], numeric, 1e-6)


def test_batch_norm_parameter_shapes_are_inferred_like_cntk():
    rule = registry.get("BatchNormalization").shape
    result = rule([(8, 8, 16), (0, 1), (0, 1), (0, 1), (0, 1), (1,)], {"spatial": True})
    assert result.infer == {i: (16, 1) for i in range(1, 5)}
    result = rule([(5, 3), (0, 1), (0, 1), (0, 1), (0, 1), (0,)], {})
    assert result.infer == {**{i: (15, 1) for i in range(1, 5)}, 5: (1,)}


def test_batch_norm_wrong_parameter_size_is_a_shape_error():
    with pytest.raises(ShapeMismatch, match="one per channel"):
        registry.get("BatchNormalization").shape([(8, 8, 16), (8,), (16,), (16,), (16,), (1,)], {"spatial": True})


def test_batch_norm_without_run_count_keeps_the_count_in_state():
    xs = bn_inputs(seen=0.0)[:5]
    op = registry.get("BatchNormalization")
    state = {}
    registry.apply_forward(op, ctx_for([1, 0, 0, 0, 0], state=state), xs, {"spatial": True}, 3)
    assert state["samples_seen"] == xs[0].shape[0]


# ---- layer normalisation -------------------------------------------------------------------------

def test_layer_norm_normalises_each_sample_over_all_its_elements():
    r = rng()
    x = r.standard_normal((3, 2, 4)) * 3 + 1
    scale, bias = np.array([1.5]), np.array([0.25])
    y, grads, gy = run("LayerNormalization", [x, scale, bias], {}, [1, 0, 0])
    expected = np.empty_like(x)
    for n in range(x.shape[0]):
        sample = x[n]
        expected[n] = (sample - sample.mean()) / math.sqrt(sample.var() + 1e-5) * 1.5 + 0.25
    assert_close(y, expected)
    for i in range(3):
        assert_close(grads[i], finite_difference("LayerNormalization", [x, scale, bias], {}, [1, 0, 0], i, gy), 1e-6)


def test_layer_norm_epsilon_zero_is_cntks_formula():
    x = rng().standard_normal((2, 5))
    y, _, _ = run("LayerNormalization", [x], {"epsilon": 0.0}, [1])
    centred = x - x.mean(axis=1, keepdims=True)
    assert_close(y, centred / np.sqrt((centred ** 2).mean(axis=1, keepdims=True)))


def test_layer_norm_scale_of_the_sample_shape_is_elementwise():
    r = rng()
    x, scale, bias = r.standard_normal((2, 3, 4)), r.standard_normal((3, 4)), r.standard_normal((3, 4))
    y, grads, gy = run("LayerNormalization", [x, scale, bias], {}, [1, 0, 0])
    plain, _, _ = run("LayerNormalization", [x], {}, [1])
    assert_close(y, plain * scale + bias)
    assert_close(grads[1], (gy * plain).sum(axis=0))


# ---- through the compiler and executor -----------------------------------------------------------

NETWORK = r"""
Conv (W, x, kernelDims, mapDims = 0, stride = 1, autoPadding = true) =
    new ComputationNode [ operation = 'Convolution' ; inputs = (W : x) ;
        kernelShape = new TensorShape [ dims = kernelDims ] ; mapCount = new TensorShape [ dims = mapDims ] ;
        strideShape = new TensorShape [ dims = stride ] ; dimPadding = new BoolVector [ items = autoPadding ] ]
Pool (x, poolKind, kernelDims, stride = 1, autoPadding = true) =
    new ComputationNode [ operation = 'Pooling' ; inputs = (x) ; pool = poolKind ;
        kernelShape = new TensorShape [ dims = kernelDims ] ; strideShape = new TensorShape [ dims = stride ] ;
        dimPadding = new BoolVector [ items = autoPadding ] ]
BN (x, scale, bias, runMean, runVariance, runCount, spatial, normalizationTimeConstant = 0) =
    new ComputationNode [ operation = 'BatchNormalization' ; inputs = (x : scale : bias : runMean : runVariance : runCount) ]
Stat (v) = ParameterTensor {(0:1), initValue = v, learningRateMultiplier = 0}
features = Input {(6:6:2)}
labels = Input {3}
W = ParameterTensor {(3:3:0:4), init = 'glorotUniform'}
c = Conv (W, features, (3:3), mapDims = 4)
b = BN (c, ParameterTensor {(0:1), initValue = 1}, ParameterTensor {(0:1), initValue = 0}, Stat (0), Stat (0),
        ParameterTensor {(1), initValue = 0, learningRateMultiplier = 0}, true, normalizationTimeConstant = 100)
p = Pool (ReLU (b), "max", (2:2), stride = 2, autoPadding = false)
g = Pool (p, "average", (0:0))
z = DenseLayer {3} (g)
ce = CrossEntropyWithSoftmax (labels, z)
criterionNodes = (ce) ; outputNodes = (z)
"""


def test_vision_network_builds_infers_shapes_and_trains_through_the_executor():
    from netlang.api import load_text

    runner = load_text(NETWORK)
    net = runner.network
    shapes = {n.name: n.shape for n in net.nodes}
    assert shapes["W"] == (3, 3, 2, 4) and shapes["c"] == (6, 6, 4)
    assert shapes["p"] == (3, 3, 4) and shapes["g"] == (1, 1, 4)
    r = rng()
    feeds = {"features": r.normal(size=(4, 2, 6, 6)), "labels": np.eye(3)[[0, 2, 1, 1]]}
    running = [runner.parameters[n.name] for n in net.parameters if n.shape == (4, 1)
               and n.learning_rate_multiplier == 0]   # runMean and runVariance, initially 0
    runner.forward(feeds, ["z"], training=True)
    assert len(running) == 2 and all(np.all(r != 0) for r in running)   # updated in place
    grads = runner.gradients(feeds)
    weight = runner.parameters["W"]
    index = (1, 0, 2, 1)
    keep = weight[index]
    weight[index] = keep + 1e-6
    up = runner.forward(feeds, ["ce"], training=True)["ce"][0]
    weight[index] = keep - 1e-6
    down = runner.forward(feeds, ["ce"], training=True)["ce"][0]
    weight[index] = keep
    assert grads["W"][index] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-8)
