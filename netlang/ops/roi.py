"""ROIPooling: max pooling of each region of interest to a fixed grid (Fast R-CNN, reference §4.4).

`ROIPooling(input, ROIs, shape, spatialScale=0.0625)` takes a feature map `input` of shape `W:H:C`
and regions `ROIs` of shape `4:R` (or `4` for one region), and gives `w:h:C:R` for `shape = w:h`:
every region divided into a w × h grid of bins, each bin the maximum of the feature cells it covers.

**ROI coordinates** (CNTK 2's convention, which netlang follows): each region is four numbers
`x1 y1 x2 y2`, the left, top, right and bottom of the box in pixels of the *network's input image*
(corners inclusive, x along the width, y along the height); `spatialScale` maps them onto the feature
map (1/16 after four 2×2 poolings, CNTK's default; 1/4 after two). On the feature map:

* `start = round(x1 · scale)`, `end = round(x2 · scale)` (round half up), and the region's length is
  `max(end − start + 1, 1)` cells, so a degenerate box (x2 < x1, an all-zero padding row) is one cell;
* bin `p` of `n` covers cells `start + floor(p · length / n)` to `start + ceil((p + 1) · length / n)`,
  exclusive, clipped to the map: neighbouring bins may share a cell, and a bin that lies entirely
  outside the map is empty and gives 0.

The gradient of each bin goes to its first maximum in row-major order (y, then x); a cell that is the
maximum of several bins receives all their gradients. The ROIs get no gradient.

The NumPy kernel loops over the cell offsets inside a bin (at most the largest bin's height × width),
each a gather of one cell per bin for the whole batch, keeping a running maximum and its position;
the backward adds the output gradient at those positions. On a GPU the CUDA kernels of `ROI_SOURCE`
do the same, one bin (forward) or one feature cell (backward) per thread.
"""
from __future__ import annotations

import numpy as np

from netlang.ir.shapes import format_shape
from netlang.ops.registry import InputSpec, OpCheck, OpDef, Param, ShapeMismatch, Signature, register, unbroadcast

ROI_SIGNATURE = Signature((
    Param("roiOutputShape", aliases=("shape", "outputShape")),
    Param("spatialScale", 0.0625),
))


def _output_grid(attrs: dict) -> tuple[int, int]:
    """(w, h) of the pooled grid."""
    grid = ROI_SIGNATURE.value(attrs, "roiOutputShape")
    grid = (grid,) if isinstance(grid, (int, float)) else tuple(grid)
    if len(grid) != 2 or any(int(d) != d or d < 1 for d in grid):
        raise ShapeMismatch(f"ROIPooling: the output shape must be two positive integers w:h, got {grid}")
    return int(grid[0]), int(grid[1])


def _roi_shape(in_shapes, attrs):
    features, rois = (tuple(s) for s in in_shapes)
    width, height = _output_grid(attrs)
    if float(ROI_SIGNATURE.value(attrs, "spatialScale")) <= 0:
        raise ShapeMismatch("ROIPooling: spatialScale must be positive")
    if len(features) != 3:
        raise ShapeMismatch(f"ROIPooling: the input must be a W:H:C feature map, got {format_shape(features)}")
    if not rois or rois[0] not in (0, 4) or len(rois) > 2:
        raise ShapeMismatch(f"ROIPooling: the ROIs must have shape 4:R (x1 y1 x2 y2 per region), "
                            f"got {format_shape(rois)}")
    return (width, height, features[2]) + rois[1:]


# ---- bins ----------------------------------------------------------------------------------------

def bin_edges(first, last, scale: float, bins: int, size: int, xp):
    """(begin, end) cell indices, end exclusive, of the `bins` bins along one axis of every region
    whose box runs from `first` to `last` (image pixels, any shape (...)): int arrays (..., bins)."""
    start = xp.floor(first.astype(np.float64) * scale + 0.5)
    end = xp.floor(last.astype(np.float64) * scale + 0.5)
    length = xp.maximum(end - start + 1, 1)[..., None]
    p = xp.arange(bins, dtype=np.float64)
    begin = xp.floor(p * length / bins) + start[..., None]
    stop = xp.ceil((p + 1) * length / bins) + start[..., None]
    return (xp.clip(begin, 0, size).astype(np.int64), xp.clip(stop, 0, size).astype(np.int64))


def _geometry(rois, attrs: dict, height: int, width: int, xp):
    """Bin edges of (B, R, 4) regions on an H × W map: rows (B, R, h) and columns (B, R, w)."""
    grid_w, grid_h = _output_grid(attrs)
    scale = float(ROI_SIGNATURE.value(attrs, "spatialScale"))
    rows = bin_edges(rois[..., 1], rois[..., 3], scale, grid_h, height, xp)
    cols = bin_edges(rois[..., 0], rois[..., 2], scale, grid_w, width, xp)
    return rows, cols


def roi_max(x, rois, attrs: dict, xp):
    """Pool (B, C, H, W) feature maps over (B, R, 4) regions: (values (B, R, C, h, w), positions
    (B, R, C, h, w) of each bin's first maximum as y·W + x, −1 for an empty bin)."""
    batch, channels, height, width = x.shape
    (row_begin, row_end), (col_begin, col_end) = _geometry(rois, attrs, height, width, xp)
    cells = xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(batch, height * width, channels)
    image = xp.arange(batch)[:, None, None, None]
    best = best_at = None
    for dy in range(max(int((row_end - row_begin).max()), 0)):
        y = row_begin + dy
        y_in = (y < row_end)[:, :, :, None]
        for dx in range(max(int((col_end - col_begin).max()), 0)):
            x_pos = col_begin + dx
            inside = y_in & (x_pos < col_end)[:, :, None, :]                  # (B, R, h, w)
            at = xp.where(inside, xp.minimum(y, height - 1)[:, :, :, None] * width +
                          xp.minimum(x_pos, width - 1)[:, :, None, :], -1)
            values = cells[image, xp.maximum(at, 0)]                            # (B, R, h, w, C)
            if best is None:
                best = xp.where(inside[..., None], values, -np.inf)
                best_at = xp.broadcast_to(at[..., None], values.shape).copy()
                continue
            better = inside[..., None] & (values > best)                        # strict: the first maximum stays
            best = xp.where(better, values, best)
            best_at = xp.where(better, at[..., None], best_at)
    if best is None:                                                            # every bin of every region is empty
        shape = rois.shape[:2] + (row_begin.shape[-1], col_begin.shape[-1], channels)
        best, best_at = xp.full(shape, -np.inf, dtype=x.dtype), xp.full(shape, -1, dtype=np.int64)
    empty = best_at < 0
    best = xp.where(empty, 0, best).astype(x.dtype, copy=False)
    return best.transpose(0, 1, 4, 2, 3), best_at.transpose(0, 1, 4, 2, 3)


def roi_max_backward(gy, best_at, x_shape: tuple, backend):
    """The (B, C, H, W) gradient of `roi_max` for the output gradient gy (B, R, C, h, w)."""
    xp = backend.xp
    batch, channels, height, width = x_shape
    grad = xp.zeros((batch, channels, height * width), dtype=gy.dtype)
    taken = best_at >= 0
    image = xp.broadcast_to(xp.arange(batch)[:, None, None, None, None], best_at.shape)
    channel = xp.broadcast_to(xp.arange(channels)[None, None, :, None, None], best_at.shape)
    backend.scatter_add(grad, (image[taken], channel[taken], best_at[taken]), gy[taken])
    return grad.reshape(x_shape)


# ---- the op: leading dynamic axes ----------------------------------------------------------------

def _batched(ctx, xs):
    """(feature maps (B, C, H, W), regions (B, R, 4), the leading axes of the output): the dynamic axes
    of both inputs broadcast to the output's (a batch value over the steps of a sequence, a static
    value over everything) and flattened into one batch axis."""
    x, rois = xs
    xp = ctx.xp
    lead = tuple(np.broadcast_shapes(x.shape[:ctx.dyn[0]], rois.shape[:ctx.dyn[1]]))
    maps = xp.broadcast_to(x, lead + x.shape[ctx.dyn[0]:]).reshape((-1,) + x.shape[ctx.dyn[0]:])
    boxes = xp.broadcast_to(rois, lead + rois.shape[ctx.dyn[1]:]).reshape(maps.shape[0], -1, 4)
    return maps, boxes, lead


def _roi_forward(ctx, xs, attrs):
    x, rois, lead = _batched(ctx, xs)
    out, best_at = roi_max(x, rois, attrs, ctx.xp)
    ctx.saved["best_at"] = best_at
    return out.reshape(lead + _sample_shape(xs[1], ctx.dyn[1], out))


def _sample_shape(rois, dyn: int, out) -> tuple:
    """Run-time sample shape of the output: (R, C, h, w), or (C, h, w) for a single `4` region."""
    return tuple(out.shape[1:]) if rois.ndim - dyn == 2 else tuple(out.shape[2:])


def _roi_backward(ctx, xs, y, gy, attrs):
    x, rois, lead = _batched(ctx, xs)
    best_at = ctx.saved.get("best_at")
    if best_at is None:
        best_at = roi_max(x, rois, attrs, ctx.xp)[1]
    grad = roi_max_backward(gy.reshape(best_at.shape), best_at, x.shape, ctx.backend)
    return [unbroadcast(grad.reshape(lead + xs[0].shape[ctx.dyn[0]:]), xs[0].shape), None]


# ---- CUDA kernels --------------------------------------------------------------------------------
#
# Run through the backend's kernel cache (runtime/gpu/kernels.py): grid-stride loops with element
# type T. The forward computes one bin per thread and keeps the position of its first maximum; the
# backward gathers, for each feature cell, the gradients of the bins that picked it (every region of
# its image, only the bins whose window can contain the cell), so nothing is scattered and the sums
# do not depend on thread order.

ROI_SOURCE = r"""
__device__ void roi_window(const T* box, double scale, long long grid_h, long long grid_w,
                           double* top, double* left, double* bin_h, double* bin_w) {
    const double x1 = floor((double)box[0] * scale + 0.5), y1 = floor((double)box[1] * scale + 0.5);
    const double x2 = floor((double)box[2] * scale + 0.5), y2 = floor((double)box[3] * scale + 0.5);
    *top = y1;
    *left = x1;
    *bin_h = fmax(y2 - y1 + 1.0, 1.0) / (double)grid_h;
    *bin_w = fmax(x2 - x1 + 1.0, 1.0) / (double)grid_w;
}

__device__ long long clip(double v, long long size) {
    return (long long)fmin(fmax(v, 0.0), (double)size);
}

extern "C" __global__ void roi_max_forward(const T* x, const T* rois, T* y, long long* best_at,
        long long channels, long long height, long long width, long long regions, long long grid_h,
        long long grid_w, double scale, long long total) {
    for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += (long long)blockDim.x * gridDim.x) {
        const long long pw = o % grid_w, ph = (o / grid_w) % grid_h, c = (o / (grid_w * grid_h)) % channels;
        const long long region = o / (grid_w * grid_h * channels), b = region / regions;
        double top, left, bin_h, bin_w;
        roi_window(rois + region * 4, scale, grid_h, grid_w, &top, &left, &bin_h, &bin_w);
        const long long h0 = clip(floor(ph * bin_h) + top, height), h1 = clip(ceil((ph + 1) * bin_h) + top, height);
        const long long w0 = clip(floor(pw * bin_w) + left, width), w1 = clip(ceil((pw + 1) * bin_w) + left, width);
        const T* map = x + (b * channels + c) * height * width;
        T best = (T)0;
        long long at = -1;
        for (long long h = h0; h < h1; ++h) {
            for (long long w = w0; w < w1; ++w) {
                const T v = map[h * width + w];
                if (at < 0 || v > best) { best = v; at = h * width + w; }
            }
        }
        y[o] = best;
        best_at[o] = at;
    }
}

extern "C" __global__ void roi_max_backward(const T* gy, const long long* best_at, const T* rois, T* gx,
        long long channels, long long height, long long width, long long regions, long long grid_h,
        long long grid_w, double scale, long long total) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)blockDim.x * gridDim.x) {
        const long long cell = i % (height * width), h = cell / width, w = cell % width;
        const long long c = (i / (height * width)) % channels, b = i / (height * width * channels);
        T acc = (T)0;
        for (long long r = 0; r < regions; ++r) {
            const long long region = b * regions + r;
            double top, left, bin_h, bin_w;
            roi_window(rois + region * 4, scale, grid_h, grid_w, &top, &left, &bin_h, &bin_w);
            // The bins whose windows [floor(p·bin) + top, ceil((p+1)·bin) + top) may hold row h, column w.
            const long long p0 = (long long)fmax(floor((h - top) / bin_h) - 1.0, 0.0);
            const long long p1 = (long long)fmin(ceil((h - top + 1.0) / bin_h) + 1.0, (double)grid_h);
            const long long q0 = (long long)fmax(floor((w - left) / bin_w) - 1.0, 0.0);
            const long long q1 = (long long)fmin(ceil((w - left + 1.0) / bin_w) + 1.0, (double)grid_w);
            const long long base = (region * channels + c) * grid_h * grid_w;
            for (long long ph = p0; ph < p1; ++ph) {
                for (long long pw = q0; pw < q1; ++pw) {
                    if (best_at[base + ph * grid_w + pw] == cell) acc += gy[base + ph * grid_w + pw];
                }
            }
        }
        gx[i] = acc;
    }
}
"""


def _launch_arguments(x, rois, attrs) -> tuple:
    """The geometry arguments both kernels take after their arrays (sizes as C long long)."""
    grid_w, grid_h = _output_grid(attrs)
    _, channels, height, width = x.shape
    sizes = tuple(np.int64(d) for d in (channels, height, width, rois.shape[1], grid_h, grid_w))
    return sizes + (np.float64(ROI_SIGNATURE.value(attrs, "spatialScale")),)


def _gpu_roi_forward(ctx, xs, attrs):
    xp, kernels = ctx.xp, ctx.backend.kernels
    x, rois, lead = _batched(ctx, xs)
    x, rois = xp.ascontiguousarray(x), xp.ascontiguousarray(rois, dtype=x.dtype)
    grid_w, grid_h = _output_grid(attrs)
    y = xp.empty((x.shape[0], rois.shape[1], x.shape[1], grid_h, grid_w), dtype=x.dtype)
    best_at = xp.empty(y.shape, dtype=np.int64)
    kernels.launch(ROI_SOURCE, "roi_max_forward", x.dtype, y.size,
                   (x, rois, y, best_at) + _launch_arguments(x, rois, attrs) + (np.int64(y.size),))
    ctx.saved["best_at"] = best_at
    return y.reshape(lead + _sample_shape(xs[1], ctx.dyn[1], y))


def _gpu_roi_backward(ctx, xs, y, gy, attrs):
    xp, kernels = ctx.xp, ctx.backend.kernels
    x, rois, lead = _batched(ctx, xs)
    rois = xp.ascontiguousarray(rois, dtype=gy.dtype)
    best_at = ctx.saved.get("best_at")
    if best_at is None:                      # not this output's forward: find the maxima again
        _gpu_roi_forward(ctx, xs, attrs)
        best_at = ctx.saved["best_at"]
    gyb = xp.ascontiguousarray(gy).reshape(best_at.shape)
    grad = xp.empty(x.shape, dtype=gy.dtype)
    kernels.launch(ROI_SOURCE, "roi_max_backward", gy.dtype, grad.size,
                   (gyb, best_at, rois, grad) + _launch_arguments(x, rois, attrs) + (np.int64(grad.size),))
    return [unbroadcast(grad.reshape(lead + xs[0].shape[ctx.dyn[0]:]), xs[0].shape), None]


# ---- registration ----------------------------------------------------------------------------------

def _maps(shape, dyn=1):
    return InputSpec(shape, dyn, "float", -1.0, 1.0)


def _boxes(shape, high, dyn=1):
    return InputSpec(shape, dyn, "float", 0.0, high, grad=False)


register(OpDef(
    name="ROIPooling", arity=(2, 2), shape=_roi_shape, forward=_roi_forward, backward=_roi_backward,
    signature=ROI_SIGNATURE, kernels={"cupy": (_gpu_roi_forward, _gpu_roi_backward)},
    doc="ROIPooling(input, ROIs, shape, spatialScale): max pooling of each region x1 y1 x2 y2 (input-image "
        "pixels, scaled by spatialScale onto the W:H:C map) to a w:h grid; output w:h:C:R",
    checks=[
        OpCheck((_maps((6, 5, 3)), _boxes((4, 3), 5.0)), {"roiOutputShape": (2, 2), "spatialScale": 1.0},
                out=(2, 2, 3, 3)),
        OpCheck((_maps((8, 6, 2)), _boxes((4, 2), 20.0)), {"shape": (3, 2), "spatialScale": 0.5},
                out=(3, 2, 2, 2)),
        OpCheck((_maps((5, 5, 2)), _boxes((4,), 4.0)), {"roiOutputShape": (2, 3), "spatialScale": 1.0},
                out=(2, 3, 2)),
        OpCheck((_maps((5, 4, 2), 2), _boxes((4, 2), 4.0, 0)), {"roiOutputShape": (2, 2), "spatialScale": 1.0},
                out=(2, 2, 2, 2)),
    ],
))
