"""Pooling (max, average, global) and MaxUnpooling.

`Pooling(x, poolKind, kernelShape, strideShape=1, autoPadding=true, lowerPad=0, upperPad=0,
ceilOutDim=false, includePad=false)` slides a window over every axis of `x` with the geometry of
`conv.py` (CNTK's ConvolveGeometry): a kernel shorter than `x`'s rank is extended with 1s (each
channel pools on its own), a vector attribute shorter than the kernel repeats its last entry, and
a kernel that names the channel axis pools across channels too (a maxout layer:
`kernelShape = 1:1:2, strideShape = 1:1:2`). Output lengths are floor((in + pads - k) / stride) + 1,
ceil with `ceilOutDim`, ceil(in / stride) with autoPadding.

* **max**: padding never wins (it is -inf); the gradient goes to the first maximum of each window
  in row-major kernel order.
* **average**: divides by the number of input cells in the window; with `includePad` by the cells
  inside the declared padding too (cells a ceilOutDim window reaches beyond the padding never count).
* **global pooling**: a 0 in `kernelShape` pools over that whole axis (no stride, no padding), so
  `kernelShape = 0:0` on `W:H:C` gives `1:1:C`; CNTK's GlobalMaxPooling / GlobalAveragePooling layers
  are `Pooling(x, "max"|"average", (0:0))`. There is no separate op.
* Every window must overlap the input (CNTK would return garbage for windows entirely in padding);
  a ceilOutDim window that would start past the input is dropped, as in PyTorch.
* CNTK's legacy 2-D node types `MaxPooling` / `AveragePooling(input, windowWidth, windowHeight,
  horizontalSubsample, verticalSubsample)` are registered too, as Pooling without padding.

`MaxUnpooling(unpoolInput, poolInput, kernelShape, ...)` places each value of `unpoolInput` at the
position that max pooling `poolInput` with the same attributes picks, zeros elsewhere; the output
has `poolInput`'s shape. Where windows overlap, values picked at the same position add up (the
adjoint of max pooling's gradient routing; identical to CNTK when windows do not overlap). Only
`unpoolInput` gets a gradient.

Kernels loop over the kernel offsets only (a few to a few dozen strided slices of the whole
batch). Max pooling's forward keeps just a running `maximum`; its backward finds each window's
first maximum again by comparing the slices with the output, offset by offset, and writes the
gradient there (written, not added, when windows do not overlap). Global pooling (every axis
either whole or untouched) is a plain reduction. MaxUnpooling keeps the index of the winning
offset per window and reuses it in its backward when it belongs to the same output.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from netlang.ir.shapes import format_shape, num_elements, to_bs
from netlang.ops.conv import (
    ConvGeometry,
    as_bools,
    as_ints,
    check_layout,
    freeze,
    kernel_offsets,
    offset_region,
    padded,
    per_axis,
    samples_first,
    unpadded,
    whole_axis,
    window_axis,
)
from netlang.ops.registry import InputSpec, OpCheck, OpDef, Param, ShapeMismatch, Signature, register

# Pooling's attributes (also MaxUnpooling's), spelled as for convolution.
POOL_SIGNATURE = Signature((
    Param("poolKind", "max", aliases=("pool",)),
    Param("kernelShape", (), aliases=("kernelDims", "filterShape")),
    Param("strideShape", 1, aliases=("stride",)),
    Param("autoPadding", True, aliases=("dimPadding", "pad")),
    Param("lowerPad", 0, aliases=("dimPadLower",)),
    Param("upperPad", 0, aliases=("dimPadUpper",)),
    Param("ceilOutDim", False),
    Param("includePad", False, aliases=("poolIncludePad",)),
    Param("imageLayout", "CHW"),
))
_pool_attr = POOL_SIGNATURE.value
# CNTK's legacy 2-D MaxPooling / AveragePooling.
LEGACY_SIGNATURE = Signature((Param("windowWidth"), Param("windowHeight"), Param("horizontalSubsample"),
                              Param("verticalSubsample"), Param("imageLayout", "CHW")))

POOL_KINDS = ("max", "average")


# ---- geometry ------------------------------------------------------------------------------------

def pool_kind(attrs: dict) -> str:
    kind = str(_pool_attr(attrs, "poolKind")).lower()
    if kind not in POOL_KINDS:
        raise ShapeMismatch(f"Pooling: poolKind must be 'max' or 'average', got '{kind}'")
    return kind


def _check_overlap(axis, i: int, x_shape: tuple, op: str) -> None:
    first_start = -axis.lower
    last_start = (axis.out - 1) * axis.stride - axis.lower
    if first_start + axis.span <= 0 or last_start >= axis.size:
        raise ShapeMismatch(f"{op}: on axis {i + 1} of input {format_shape(x_shape)} a window lies entirely in "
                            "the padding (the padding must be smaller than the kernel)")


@lru_cache(maxsize=512)
def _cached_geometry(x_shape: tuple, frozen_attrs: tuple, op: str, ceil_allowed: bool) -> ConvGeometry:
    attrs = dict(frozen_attrs)
    kernel = as_ints(_pool_attr(attrs, "kernelShape"), "kernelShape")
    if not kernel:
        raise ShapeMismatch(f"{op} needs kernelShape")
    if len(kernel) > len(x_shape):
        raise ShapeMismatch(f"{op}: kernel {format_shape(kernel)} has more axes than its input {format_shape(x_shape)}")
    strides = as_ints(_pool_attr(attrs, "strideShape"), "strideShape")
    pads = as_bools(_pool_attr(attrs, "autoPadding"))
    lowers = as_ints(_pool_attr(attrs, "lowerPad"), "lowerPad")
    uppers = as_ints(_pool_attr(attrs, "upperPad"), "upperPad")
    ceil_out = ceil_allowed and bool(_pool_attr(attrs, "ceilOutDim"))
    pool_kind(attrs)                                       # an unknown kind fails at build time
    axes = []
    for i, size in enumerate(x_shape):
        if i >= len(kernel):
            axes.append(window_axis(size, 1))              # beyond the kernel: every cell on its own
            continue
        k = kernel[i]
        if k == 0:
            axes.append(whole_axis(size))                  # global pooling over this axis
            continue
        try:
            axis = window_axis(size, k, per_axis(strides, i, 1), 1, per_axis(pads, i, False),
                               per_axis(lowers, i, 0), per_axis(uppers, i, 0), ceil_out)
        except ShapeMismatch as err:
            raise ShapeMismatch(f"{op}: axis {i + 1} of input {format_shape(x_shape)}: {err}") from None
        _check_overlap(axis, i, x_shape, op)
        axes.append(axis)
    return ConvGeometry(tuple(axes), 1)


def pooling_geometry(x_shape: tuple, attrs: dict, op: str = "Pooling", ceil_allowed: bool = True) -> ConvGeometry:
    if 0 in x_shape:
        raise ShapeMismatch(f"{op}: the input shape {format_shape(x_shape)} is not known yet")
    check_layout(attrs, op)
    return _cached_geometry(tuple(x_shape), freeze(attrs), op, ceil_allowed)


@lru_cache(maxsize=256)
def _window_counts(geo: ConvGeometry, include_pad: bool):
    """Cells each average window divides by, shaped (1, *out_rm) to broadcast over a batch."""
    counts = np.ones((1,) * (len(geo.axes) + 1))
    for j, a in enumerate(geo.rm_axes):
        taps = (np.arange(a.out)[:, None] * a.stride - a.lower) + np.arange(a.kernel)[None, :] * a.dilation
        low, high = (-a.declared_lower, a.size + a.declared_upper) if include_pad else (0, a.size)
        per_axis_count = ((taps >= low) & (taps < high)).sum(axis=1)
        shape = [1] * (len(geo.axes) + 1)
        shape[j + 1] = a.out
        counts = counts * per_axis_count.reshape(shape)
    return counts


# ---- kernels on (B, *sample) arrays --------------------------------------------------------------

def whole_axes(geo: ConvGeometry):
    """Array axes (batch first) that one window spans entirely, if every other axis is untouched
    (kernel 1, stride 1): global pooling, done as a plain reduction. Else None."""
    axes = []
    for j, a in enumerate(geo.rm_axes, start=1):
        if a.out == 1 and a.kernel == a.size and a.trivial_padding:
            if a.kernel > 1:
                axes.append(j)
        elif not (a.kernel == 1 and a.stride == 1 and a.trivial_padding):
            return None
    return tuple(axes)


def max_values(x, geo: ConvGeometry, xp):
    """The maximum of every window: one in-place `maximum` per kernel offset."""
    axes = geo.rm_axes
    p = padded(x, axes, xp, fill=-np.inf)
    best = None
    for offsets in kernel_offsets(axes):
        window = p[offset_region(axes, offsets)]
        if best is None:
            best = window.copy()
        else:
            xp.maximum(best, window, out=best)
    return best


def disjoint_windows(geo: ConvGeometry) -> bool:
    """Whether no two windows share a cell (stride ≥ kernel on every axis), so the cells that
    different kernel offsets visit never coincide and gradients can be written, not added."""
    return all(a.stride >= a.span or a.out == 1 for a in geo.axes)


def _deposit(target, region, values, mask, disjoint: bool, xp) -> None:
    """target[region] (+)= values · mask. (A masked `add(..., where=)` is many times slower.)"""
    if disjoint:
        xp.multiply(values, mask, out=target[region])
    else:
        target[region] += values * mask


def max_values_backward(x, y, gy, geo: ConvGeometry, xp):
    """Each window's gradient to its first maximum (row-major kernel order), found by comparing
    the window with the forward's maximum."""
    axes = geo.rm_axes
    disjoint = disjoint_windows(geo)
    p = padded(x, axes, xp, fill=-np.inf)
    target = xp.zeros(p.shape, dtype=gy.dtype)
    taken = xp.zeros(y.shape, dtype=bool)
    hit = xp.empty(y.shape, dtype=bool)
    for offsets in kernel_offsets(axes):
        region = offset_region(axes, offsets)
        xp.equal(p[region], y, out=hit)
        xp.greater(hit, taken, out=hit)           # a maximum not claimed by an earlier offset
        xp.logical_or(taken, hit, out=taken)
        _deposit(target, region, gy, hit, disjoint, xp)
    return unpadded(target, axes, xp)


def global_backward(x, gy, axes: tuple, kind: str, xp):
    """Gradient of a max / average over whole `axes` of x."""
    if kind == "average":
        gx = xp.empty(x.shape, dtype=gy.dtype)
        gx[...] = gy / num_elements(x.shape[a] for a in axes)
        return gx
    rest = tuple(a for a in range(x.ndim) if a not in axes)
    order = rest + axes
    moved = xp.ascontiguousarray(x.transpose(order))
    flat = moved.reshape(moved.shape[:len(rest)] + (-1,))
    first = flat.argmax(axis=-1)[..., None]   # argmax picks the first maximum
    hot = xp.arange(flat.shape[-1]) == first
    g = hot * gy.transpose(order).reshape(first.shape)
    return g.reshape(moved.shape).transpose(tuple(order.index(a) for a in range(x.ndim)))


def max_windows(x, geo: ConvGeometry, xp):
    """(maximum, index of the kernel offset holding the first maximum) for every window of x."""
    axes = geo.rm_axes
    p = padded(x, axes, xp, fill=-np.inf)
    best = arg = None
    for index, offsets in enumerate(kernel_offsets(axes)):
        window = p[offset_region(axes, offsets)]
        if best is None:
            best = window.copy()
            arg = xp.zeros(best.shape, dtype=xp.int32)
            continue
        better = window > best                    # strict: the first maximum keeps its place
        xp.copyto(best, window, where=better)
        xp.copyto(arg, index, where=better)
    return best, arg


def route_to_windows(values, arg, geo: ConvGeometry, xp):
    """Scatter-add each window's value to the cell its `arg` names; the input-shaped result."""
    axes = geo.rm_axes
    disjoint = disjoint_windows(geo)
    target = xp.zeros((values.shape[0],) + tuple(a.padded for a in axes), dtype=values.dtype)
    for index, offsets in enumerate(kernel_offsets(axes)):
        _deposit(target, offset_region(axes, offsets), values, arg == index, disjoint, xp)
    return unpadded(target, axes, xp)


def gather_from_windows(source, arg, geo: ConvGeometry, xp):
    """Each window's value of `source` (input-shaped) at the cell its `arg` names."""
    axes = geo.rm_axes
    p = padded(source, axes, xp)
    out = xp.zeros(arg.shape, dtype=source.dtype)
    for index, offsets in enumerate(kernel_offsets(axes)):
        out += p[offset_region(axes, offsets)] * (arg == index)
    return out


def average_windows(x, geo: ConvGeometry, include_pad: bool, xp):
    axes = geo.rm_axes
    p = padded(x, axes, xp)
    total = None
    for offsets in kernel_offsets(axes):
        window = p[offset_region(axes, offsets)]
        if total is None:
            total = window.copy()
        else:
            total += window
    total /= xp.asarray(_window_counts(geo, include_pad), dtype=x.dtype)
    return total


def average_windows_backward(gy, geo: ConvGeometry, include_pad: bool, xp):
    axes = geo.rm_axes
    g = gy / xp.asarray(_window_counts(geo, include_pad), dtype=gy.dtype)
    disjoint = disjoint_windows(geo)
    target = xp.zeros((gy.shape[0],) + tuple(a.padded for a in axes), dtype=gy.dtype)
    for offsets in kernel_offsets(axes):
        if disjoint:
            target[offset_region(axes, offsets)] = g
        else:
            target[offset_region(axes, offsets)] += g
    return unpadded(target, axes, xp)


def pool_forward(x, geo: ConvGeometry, kind: str, include_pad: bool, xp):
    axes = whole_axes(geo)
    if axes is not None:
        reduce = xp.max if kind == "max" else xp.mean
        return reduce(x, axis=axes, keepdims=True) if axes else x.copy()
    if kind == "max":
        return max_values(x, geo, xp)
    return average_windows(x, geo, include_pad, xp)


def pool_backward(x, y, gy, geo: ConvGeometry, kind: str, include_pad: bool, xp):
    axes = whole_axes(geo)
    if axes is not None:
        return global_backward(x, gy, axes, kind, xp) if axes else gy.copy()
    if kind == "max":
        return max_values_backward(x, y, gy, geo, xp)
    return average_windows_backward(gy, geo, include_pad, xp)


# ---- the GPU kernels -----------------------------------------------------------------------------
#
# On the CuPy backend a pooling window is one thread's loop: forward computes each output from its
# window (max also records where its first maximum is), backward gathers into each input cell the
# gradients of the windows that picked (max) or contain (average) it, so nothing is scattered and
# the result does not depend on thread order. Up to four sample axes (batch first, then the
# row-major sample axes) are handled by one source; the geometry goes in as a small device table.
# Global pooling stays a plain reduction, and deeper inputs take the kernels above.

POOL_AXES = 4
_FIELDS = 8        # size, out, kernel, stride, lower, dilation, first and last+1 cell a window counts

POOL_SOURCE = r"""
#define AXES 4
#define G(j, f) g[(j) * 8 + (f)]

__device__ long long cells(const long long* g, int field) {
    long long n = 1;
    for (int j = 0; j < AXES; ++j) n *= G(j, field);
    return n;
}

// The row-major index within a sample of the cell that kernel offset kk of output oc reads; -1 in padding.
__device__ long long window_cell(const long long* g, const long long* oc, long long kk) {
    long long k[AXES];
    for (int j = AXES - 1; j >= 0; --j) { k[j] = kk % G(j, 2); kk /= G(j, 2); }
    long long index = 0;
    for (int j = 0; j < AXES; ++j) {
        long long c = oc[j] * G(j, 3) - G(j, 4) + k[j] * G(j, 5);
        if (c < 0 || c >= G(j, 0)) return -1;
        index = index * G(j, 0) + c;
    }
    return index;
}

// The output that kernel offset kk of input cell ic belongs to (row-major within a sample), or -1.
__device__ long long window_of(const long long* g, const long long* ic, long long kk) {
    long long k[AXES];
    for (int j = AXES - 1; j >= 0; --j) { k[j] = kk % G(j, 2); kk /= G(j, 2); }
    long long index = 0;
    for (int j = 0; j < AXES; ++j) {
        long long t = ic[j] + G(j, 4) - k[j] * G(j, 5);
        if (t < 0 || t % G(j, 3) != 0) return -1;
        t /= G(j, 3);
        if (t >= G(j, 1)) return -1;
        index = index * G(j, 1) + t;
    }
    return index;
}

__device__ long long split(const long long* g, long long flat, int field, long long* coords) {
    for (int j = AXES - 1; j >= 0; --j) { coords[j] = flat % G(j, field); flat /= G(j, field); }
    return flat;
}

// The cells an average window divides by: those within [first, last) on every axis.
__device__ T window_count(const long long* g, const long long* oc) {
    long long n = 1;
    for (int j = 0; j < AXES; ++j) {
        long long inside = 0;
        for (long long k = 0; k < G(j, 2); ++k) {
            long long c = oc[j] * G(j, 3) - G(j, 4) + k * G(j, 5);
            inside += (c >= G(j, 6) && c < G(j, 7));
        }
        n *= inside;
    }
    return (T)n;
}

extern "C" __global__ void max_forward(const T* x, T* y, int* arg, const long long* g, long long total) {
    const long long per_in = cells(g, 0), per_out = cells(g, 1), taps = cells(g, 2);
    for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += (long long)blockDim.x * gridDim.x) {
        long long oc[AXES];
        const long long b = split(g, o, 1, oc);
        T best = (T)0;
        int at = -1;
        for (long long kk = 0; kk < taps; ++kk) {
            const long long c = window_cell(g, oc, kk);
            if (c < 0) continue;
            const T v = x[b * per_in + c];
            if (at < 0 || v > best) { best = v; at = (int)c; }
        }
        y[o] = at < 0 ? (T)__int_as_float((int)0xff800000) : best;   // -inf: NVRTC has no INFINITY macro
        arg[o] = at;
    }
}

extern "C" __global__ void max_backward(const T* gy, const int* arg, T* gx, const long long* g, long long total) {
    const long long per_in = cells(g, 0), per_out = cells(g, 1), taps = cells(g, 2);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)blockDim.x * gridDim.x) {
        long long ic[AXES];
        const long long b = split(g, i, 0, ic);
        const long long cell = i - b * per_in;
        T acc = (T)0;
        for (long long kk = 0; kk < taps; ++kk) {
            const long long o = window_of(g, ic, kk);
            if (o >= 0 && arg[b * per_out + o] == cell) acc += gy[b * per_out + o];
        }
        gx[i] = acc;
    }
}

extern "C" __global__ void average_forward(const T* x, T* y, const long long* g, long long total) {
    const long long per_in = cells(g, 0), taps = cells(g, 2);
    for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += (long long)blockDim.x * gridDim.x) {
        long long oc[AXES];
        const long long b = split(g, o, 1, oc);
        T sum = (T)0;
        for (long long kk = 0; kk < taps; ++kk) {
            const long long c = window_cell(g, oc, kk);
            if (c >= 0) sum += x[b * per_in + c];
        }
        y[o] = sum / window_count(g, oc);
    }
}

extern "C" __global__ void average_backward(const T* gy, T* gx, const long long* g, long long total) {
    const long long per_in = cells(g, 0), per_out = cells(g, 1), taps = cells(g, 2);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)blockDim.x * gridDim.x) {
        long long ic[AXES];
        const long long b = split(g, i, 0, ic);
        T acc = (T)0;
        for (long long kk = 0; kk < taps; ++kk) {
            const long long o = window_of(g, ic, kk);
            if (o < 0) continue;
            long long oc[AXES];
            split(g, o, 1, oc);
            acc += gy[b * per_out + o] / window_count(g, oc);
        }
        gx[i] = acc;
    }
}
"""


def kernel_geometry(geo: ConvGeometry, include_pad: bool) -> np.ndarray | None:
    """The device table of `geo` (row-major axes, padded in front to four), or None if deeper."""
    axes = geo.rm_axes
    if len(axes) > POOL_AXES:
        return None
    rows = [[1, 1, 1, 1, 0, 1, 0, 1]] * (POOL_AXES - len(axes))
    for a in axes:
        low, high = (-a.declared_lower, a.size + a.declared_upper) if include_pad else (0, a.size)
        rows.append([a.size, a.out, a.kernel, a.stride, a.lower, a.dilation, low, high])
    return np.asarray(rows, dtype=np.int64).reshape(-1)


def _gpu_table(ctx, geo: ConvGeometry, include_pad: bool):
    if whole_axes(geo) is not None:
        return None
    table = kernel_geometry(geo, include_pad)
    return None if table is None else ctx.backend.kernels.constant(("pooling", geo, include_pad), table)


def _gpu_pooling_forward(ctx, xs, attrs):
    geo, xb, lead, kind, include_pad = _pooling_setup(ctx, xs[0], attrs)
    table = _gpu_table(ctx, geo, include_pad)
    if table is None:
        return _pooling_forward(ctx, xs, attrs)
    xp, kernels = ctx.xp, ctx.backend.kernels
    xb = xp.ascontiguousarray(xb)
    yb = xp.empty((xb.shape[0],) + tuple(reversed(geo.out_shape)), dtype=xb.dtype)
    count = np.int64(yb.size)
    if kind == "max":
        arg = xp.empty(yb.shape, dtype=np.int32)
        kernels.launch(POOL_SOURCE, "max_forward", xb.dtype, yb.size, (xb, yb, arg, table, count))
    else:
        kernels.launch(POOL_SOURCE, "average_forward", xb.dtype, yb.size, (xb, yb, table, count))
    y = yb.reshape(lead + yb.shape[1:])
    if kind == "max":
        ctx.saved["pooling"] = (y, arg)
    return y


def _gpu_pooling_backward(ctx, xs, y, gy, attrs):
    geo, xb, lead, kind, include_pad = _pooling_setup(ctx, xs[0], attrs)
    table = _gpu_table(ctx, geo, include_pad)
    if table is None:
        return _pooling_backward(ctx, xs, y, gy, attrs)
    xp, kernels = ctx.xp, ctx.backend.kernels
    gyb = xp.ascontiguousarray(gy).reshape((xb.shape[0],) + tuple(reversed(geo.out_shape)))
    gx = xp.empty(xb.shape, dtype=gy.dtype)
    count = np.int64(gx.size)
    if kind == "max":
        arg = _saved_windows(ctx, "pooling", y)
        if arg is None:       # not this output's forward: find the maxima again
            _gpu_pooling_forward(ctx, xs, attrs)
            arg = ctx.saved["pooling"][1]
        kernels.launch(POOL_SOURCE, "max_backward", gy.dtype, gx.size, (gyb, arg, gx, table, count))
    else:
        kernels.launch(POOL_SOURCE, "average_backward", gy.dtype, gx.size, (gyb, gx, table, count))
    return [gx.reshape(xs[0].shape)]


# ---- the ops -------------------------------------------------------------------------------------

def _saved_windows(ctx, key: str, y):
    """The window indices forward kept for this very output, or None."""
    saved = ctx.saved.get(key)
    return saved[1] if saved is not None and saved[0] is y else None


def _pooling_shape(in_shapes, attrs):
    return pooling_geometry(tuple(in_shapes[0]), attrs).out_shape


def _pooling_setup(ctx, x, attrs):
    dyn = ctx.dyn[0] if ctx.dyn else 0
    geo = pooling_geometry(to_bs(x.shape[dyn:]), attrs)
    xb, lead = samples_first(x, dyn)
    kind = pool_kind(attrs)
    include_pad = kind == "average" and bool(_pool_attr(attrs, "includePad"))
    return geo, xb, lead, kind, include_pad


def _pooling_forward(ctx, xs, attrs):
    geo, xb, lead, kind, include_pad = _pooling_setup(ctx, xs[0], attrs)
    yb = pool_forward(xb, geo, kind, include_pad, ctx.xp)
    return yb.reshape(lead + yb.shape[1:])


def _pooling_backward(ctx, xs, y, gy, attrs):
    geo, xb, lead, kind, include_pad = _pooling_setup(ctx, xs[0], attrs)
    yb = y.reshape((xb.shape[0],) + y.shape[len(lead):])
    gyb = gy.reshape(yb.shape)
    return [pool_backward(xb, yb, gyb, geo, kind, include_pad, ctx.xp).reshape(xs[0].shape)]


def _unpooling_geometry(u_shape: tuple, p_shape: tuple, attrs: dict) -> ConvGeometry:
    geo = pooling_geometry(p_shape, {**attrs, "poolKind": "max"}, "MaxUnpooling", ceil_allowed=False)
    if tuple(u_shape) != geo.out_shape:
        raise ShapeMismatch(f"MaxUnpooling: the values to unpool are {format_shape(u_shape)}, but max pooling "
                            f"{format_shape(p_shape)} with these attributes gives {format_shape(geo.out_shape)}")
    return geo


def _unpooling_shape(in_shapes, attrs):
    return _unpooling_geometry(tuple(in_shapes[0]), tuple(in_shapes[1]), attrs).in_shape


def _unpooling_inputs(ctx, xs, attrs):
    u, p = xs
    dyn_u = ctx.dyn[0] if ctx.dyn else 0
    dyn_p = ctx.dyn[1] if len(ctx.dyn) > 1 else 0
    geo = _unpooling_geometry(to_bs(u.shape[dyn_u:]), to_bs(p.shape[dyn_p:]), attrs)
    ub, _ = samples_first(u, dyn_u)
    pb, lead = samples_first(p, dyn_p)
    if ub.shape[0] != pb.shape[0]:
        raise ShapeMismatch("MaxUnpooling: the two inputs must have the same dynamic axes")
    return geo, ub, pb, lead


def _unpooling_forward(ctx, xs, attrs):
    geo, ub, pb, lead = _unpooling_inputs(ctx, xs, attrs)
    arg = max_windows(pb, geo, ctx.xp)[1]
    out = route_to_windows(ub, arg, geo, ctx.xp)
    y = out.reshape(lead + out.shape[1:])
    ctx.saved["unpooling"] = (y, arg)
    return y


def _unpooling_backward(ctx, xs, y, gy, attrs):
    geo, ub, pb, lead = _unpooling_inputs(ctx, xs, attrs)
    arg = _saved_windows(ctx, "unpooling", y)
    if arg is None:
        arg = max_windows(pb, geo, ctx.xp)[1]
    gyb = gy.reshape((pb.shape[0],) + gy.shape[len(lead):])
    return [gather_from_windows(gyb, arg, geo, ctx.xp).reshape(xs[0].shape), None]


def _legacy_attrs(kind: str, attrs: dict) -> dict:
    """CNTK's legacy 2-D MaxPooling/AveragePooling(input, windowWidth, windowHeight,
    horizontalSubsample, verticalSubsample) as Pooling attributes: no padding."""
    try:
        window = (int(attrs["windowWidth"]), int(attrs["windowHeight"]))
        step = (int(attrs["horizontalSubsample"]), int(attrs["verticalSubsample"]))
    except (KeyError, TypeError, ValueError):
        raise ShapeMismatch(f"{kind.capitalize()}Pooling needs windowWidth, windowHeight, horizontalSubsample and "
                            "verticalSubsample") from None
    return {"poolKind": kind, "kernelShape": window, "strideShape": step, "autoPadding": False,
            "imageLayout": LEGACY_SIGNATURE.value(attrs, "imageLayout")}


def _legacy(kind: str, forward_kernel=None, backward_kernel=None):
    """Shape rule and kernels of a legacy op from Pooling's (`forward_kernel`/`backward_kernel`:
    Pooling's kernels of one backend; default its NumPy ones)."""
    forward_kernel = forward_kernel or _pooling_forward
    backward_kernel = backward_kernel or _pooling_backward

    def shape(in_shapes, attrs):
        return _pooling_shape(in_shapes, _legacy_attrs(kind, attrs))

    def forward(ctx, xs, attrs):
        return forward_kernel(ctx, xs, _legacy_attrs(kind, attrs))

    def backward(ctx, xs, y, gy, attrs):
        return backward_kernel(ctx, xs, y, gy, _legacy_attrs(kind, attrs))

    return shape, forward, backward


def _x(shape, dyn=1, grad=True):
    return InputSpec(tuple(shape), dyn=dyn, grad=grad)


def _pool(kind, kernel, **more):
    return {"poolKind": kind, "kernelShape": kernel, **more}


POOLING = register(OpDef(
    name="Pooling", arity=(1, 1), shape=_pooling_shape, forward=_pooling_forward, backward=_pooling_backward,
    signature=POOL_SIGNATURE, kernels={"cupy": (_gpu_pooling_forward, _gpu_pooling_backward)},
    doc="max or average pooling over every axis (poolKind, kernelShape, strideShape, autoPadding, lowerPad, "
        "upperPad, ceilOutDim, includePad); a 0 kernel dimension pools the whole axis (global pooling)",
    checks=[
        OpCheck((_x((4, 4, 2)),), _pool("max", (2, 2), strideShape=2, autoPadding=False), out=(2, 2, 2)),
        OpCheck((_x((5, 4, 2)),), _pool("average", (3, 3)), out=(5, 4, 2)),
        OpCheck((_x((5, 4, 2)),), _pool("average", (3, 3), includePad=True), out=(5, 4, 2)),
        OpCheck((_x((5, 5, 1)),), _pool("max", (3, 3), strideShape=2), out=(3, 3, 1)),
        OpCheck((_x((5, 5, 1)),), _pool("max", (2, 2), strideShape=2, autoPadding=False, ceilOutDim=True),
                out=(3, 3, 1)),
        OpCheck((_x((5, 5, 1)),), _pool("average", (2, 2), strideShape=2, autoPadding=False, ceilOutDim=True,
                                        includePad=True), out=(3, 3, 1)),
        OpCheck((_x((5, 4, 1)),), _pool("average", (2, 2), strideShape=2, autoPadding=False, lowerPad=1,
                                        upperPad=(0, 1)), out=(3, 3, 1)),
        OpCheck((_x((4, 3, 2)),), _pool("average", (0, 0)), out=(1, 1, 2)),         # global
        OpCheck((_x((4, 3, 2)),), _pool("max", (0, 0)), out=(1, 1, 2)),
        OpCheck((_x((7,)),), _pool("max", (3,), strideShape=2, autoPadding=False), out=(3,)),        # 1-D
        OpCheck((_x((4, 4, 4, 2)),), _pool("average", (2, 2, 2), strideShape=2), out=(2, 2, 2, 2)),  # 3-D
        OpCheck((_x((3, 3, 4)),), _pool("max", (1, 1, 2), strideShape=(1, 1, 2), autoPadding=False),
                out=(3, 3, 2)),                                                      # maxout over channels
        OpCheck((_x((4, 4, 2), dyn=2),), _pool("max", (2, 2), strideShape=2), out=(2, 2, 2)),
    ],
))

MAX_UNPOOLING = register(OpDef(
    name="MaxUnpooling", arity=(2, 2), shape=_unpooling_shape, forward=_unpooling_forward,
    backward=_unpooling_backward, signature=POOL_SIGNATURE,
    doc="MaxUnpooling(unpoolInput, poolInput, kernelShape, ...): put each value where max pooling poolInput "
        "picks its maximum",
    checks=[
        OpCheck((_x((2, 2, 2)), _x((4, 4, 2), grad=False)), {"kernelShape": (2, 2), "strideShape": 2,
                                                             "autoPadding": False}, out=(4, 4, 2)),
        OpCheck((_x((3, 3, 1)), _x((5, 5, 1), grad=False)), {"kernelShape": (3, 3), "strideShape": 2},
                out=(5, 5, 1)),                                                      # overlapping windows
    ],
))

for _kind in POOL_KINDS:
    _rule, _forward, _backward = _legacy(_kind)
    _, _gpu_forward, _gpu_backward = _legacy(_kind, _gpu_pooling_forward, _gpu_pooling_backward)
    register(OpDef(
        name=f"{_kind.capitalize()}Pooling", arity=(1, 1), shape=_rule, forward=_forward, backward=_backward,
        signature=LEGACY_SIGNATURE, kernels={"cupy": (_gpu_forward, _gpu_backward)},
        doc=f"legacy 2-D {_kind} pooling (windowWidth, windowHeight, horizontalSubsample, verticalSubsample), "
            "no padding",
        checks=[OpCheck((_x((5, 4, 2)),), {"windowWidth": 2, "windowHeight": 3, "horizontalSubsample": 2,
                                           "verticalSubsample": 1}, out=(2, 2, 2))],
    ))
