"""Convolution and ConvolutionTranspose, with the window geometry that pooling shares.

Semantics are CNTK's (reference §4.2, §4.4), in BrainScript shapes, first axis fastest:

* `Convolution(W, x)` slides a kernel over *every* axis of `x`. `kernelShape` may be shorter than
  `x`'s rank; the missing trailing axes are reduction axes (the kernel spans them whole), so the
  usual `kernelShape = 3:3` on an image `W:H:C` is the kernel `3:3:C`. The kernel may also name the
  channel axis itself (`5:5:1`). The last axis of the output is `mapCount` times the last axis the
  windows produce: `(W', H', 1·mapCount)` for an image.
* `W`'s BS shape is `kernel ++ mapCount` (`(5, 5, 1, 32)`, row-major `(32, 1, 5, 5)`), or the legacy
  matrix `(mapCount, kernel elements)`. Zero dims of `W` are inferred; `mapCount = 0` takes it
  from `W`.
* Per-axis attributes (`strideShape`, `autoPadding`, `lowerPad`, `upperPad`, `dilation`) accept a
  scalar or a vector; a vector shorter than the kernel repeats its last entry (CNTK). They apply to
  the spatial axes only: the channel axis (an extended reduction axis, or a trailing kernel entry
  equal to the input's channel count) is never strided, padded or dilated, so `autoPadding = true`
  with a `5:5:1` kernel behaves as CNTK's documented `true:true:false`.
* Output length per axis: with `autoPadding`, ceil(in / stride) ("same"); without, it is
  floor((in + lowerPad + upperPad - dilation·(k-1) - 1) / stride) + 1 (ceil with `ceilOutDim`,
  which pooling uses; a ceil window that would start past the input is dropped, as in PyTorch).
  Unlike CNTK we do not insist that explicit pads make the windows fill the padded input
  exactly; trailing cells no window reaches are ignored, as in PyTorch.
* Automatic padding follows CNTK's ConvolveGeometry: the first window is centred at
  `extra // 2`, where `extra = in - ((out-1)·stride + 1)` (C++ truncation), so the lower padding is
  `dilation·((k-1)//2) - extra//2` and the upper padding is whatever the last window needs. For odd
  kernels at stride 1 that is symmetric; an even kernel gets its extra cell of padding on the
  upper side (k=2: 0 below, 1 above; k=4: 1 below, 2 above). At stride 2 CNTK pads *below* where
  TensorFlow's "SAME" pads above (k=3, in=32: 1 below, 0 above), and a 1×1 kernel at stride 2
  crops the last cell (upper padding -1). Negative paddings crop.
* `ConvolutionTranspose(W, x)` (also `Convolution` with `transpose = true`) is the adjoint of the
  convolution that maps its output to `x`: `kernelShape` includes the output channels
  (`filter ++ numOutputChannels`, taken from `W` when missing), `mapCount` is `x`'s channel count,
  `W` is `kernel ++ mapCount`. The output length is (in-1)·stride + 1 with autoPadding, else
  (in-1)·stride + dilation·(k-1) + 1 - lowerPad - upperPad, unless `outputShape` is given, which
  must convolve back to `x`'s shape.
* Only `sharing = true` (one kernel for all positions) and `imageLayout = "CHW"`/"cudnn" exist.

On the GPU the convolutions are cuDNN's (see "the GPU path" below). The CPU kernels are im2col: the windows of the padded input are copied into a column matrix once
(sample, kernel element, position) and multiplied by the weight as one GEMM per sample (a batched
`matmul`). At stride 1 the column matrix is built over the *padded* grid with row-contiguous
copies (the flat-shift trick: a kernel offset is a constant shift of the flattened padded image),
which is several times faster to build than a strided window copy; the few columns that fall in
the padding are computed and dropped. Samples go in blocks that keep the column buffer near the
cache (or `maxTempMemSizeInSamples` samples at a time). The backward recomputes the columns rather
than keeping them, and scatters data gradients back (col2im) with one strided add per kernel offset.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

from netlang.ir.shapes import format_shape, num_elements, to_bs
from netlang.ops.registry import InputSpec, OpCheck, OpDef, Param, ShapeMismatch, ShapeResult, Signature, register

# Column buffer per block of samples; a few MB keeps im2col's output hot for the GEMM that reads it.
COLUMN_BLOCK_BYTES = 8 << 20


# ---- attributes ----------------------------------------------------------------------------------

def as_tuple(value) -> tuple:
    """A scalar or a BS array (tuple/list/ndarray) as a tuple."""
    if value is None:
        return ()
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def as_ints(value, what: str) -> tuple:
    out = []
    for v in as_tuple(value):
        try:
            whole = not isinstance(v, bool) and float(v) == int(v)
        except (TypeError, ValueError, OverflowError):
            whole = False
        if not whole:
            raise ShapeMismatch(f"{what} must be whole numbers, got {as_tuple(value)}")
        out.append(int(v))
    return tuple(out)


def as_bools(value) -> tuple:
    return tuple(bool(v) for v in as_tuple(value))


def per_axis(values: tuple, i: int, default):
    """Value for axis i: CNTK repeats a vector's last entry for the remaining kernel axes."""
    if not values:
        return default
    return values[i] if i < len(values) else values[-1]


def freeze(value):
    """A hashable copy of an attribute value (for caching geometries); what cannot be hashed is
    kept by its repr, which only the cache key sees."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return tuple(freeze(v) for v in as_tuple(value))
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


# Convolution's attributes: CNTK's node-record name first, then its function-argument and legacy
# spellings (strideShape / stride …).
CONV_SIGNATURE = Signature((
    Param("kernelShape", (), aliases=("kernelDims", "filterShape")),
    Param("mapCount", 0, aliases=("mapDims", "numOutputChannels")),
    Param("strideShape", 1, aliases=("stride",)),
    Param("sharing", True, aliases=("dimSharing",)),
    Param("autoPadding", True, aliases=("dimPadding", "pad")),
    Param("lowerPad", 0, aliases=("dimPadLower",)),
    Param("upperPad", 0, aliases=("dimPadUpper",)),
    Param("dilation", 1, aliases=("dimDilation",)),
    Param("transpose", False),
    Param("outputShape", None, aliases=("dimOutputShape",)),
    Param("maxTempMemSizeInSamples", 0),
    Param("imageLayout", "CHW"),
))
_conv = CONV_SIGNATURE.value


def check_layout(attrs: dict, op: str) -> None:
    layout = str(_conv(attrs, "imageLayout"))
    if layout.lower() not in ("chw", "cudnn"):
        raise ShapeMismatch(f"{op}: imageLayout '{layout}' is not supported; images are W:H:C "
                            "('CHW', CNTK's 'cudnn' layout)")


# ---- geometry ------------------------------------------------------------------------------------

def _trunc_half(v: int) -> int:
    """v / 2 rounded toward zero, as CNTK's C++ integer division does."""
    return -((-v) // 2) if v < 0 else v // 2


@dataclass(frozen=True)
class WindowAxis:
    """How the windows sweep one axis. `lower`/`upper` are the padding the windows actually reach
    (negative: cells cropped); `declared_*` is the padding the user asked for (average pooling's
    includePad counts it)."""

    size: int
    kernel: int
    stride: int
    dilation: int
    lower: int
    upper: int
    out: int
    declared_lower: int = 0
    declared_upper: int = 0

    @property
    def span(self) -> int:
        return (self.kernel - 1) * self.dilation + 1

    @property
    def padded(self) -> int:
        """Length of the padded axis the windows cover exactly."""
        return (self.out - 1) * self.stride + self.span

    @property
    def trivial_padding(self) -> bool:
        return self.lower == 0 and self.padded == self.size

    def region(self, offset: int) -> slice:
        """Cells of the padded axis that kernel element `offset` visits, one per output position."""
        start = offset * self.dilation
        return slice(start, start + (self.out - 1) * self.stride + 1, self.stride)


def window_axis(size: int, kernel: int, stride: int = 1, dilation: int = 1, auto_pad: bool = False,
                lower: int = 0, upper: int = 0, ceil_out: bool = False) -> WindowAxis:
    """One axis of CNTK's ConvolveGeometry (output length and effective padding)."""
    if kernel < 1 or stride < 1 or dilation < 1:
        raise ShapeMismatch(f"kernel {kernel}, stride {stride} and dilation {dilation} must all be at least 1")
    if not auto_pad and (lower < 0 or upper < 0):
        raise ShapeMismatch(f"padding must not be negative, got lowerPad {lower}, upperPad {upper}")
    span = (kernel - 1) * dilation + 1
    room = size + (dilation * (kernel - 1) if auto_pad else lower + upper)
    if room < span:
        raise ShapeMismatch(f"a kernel of extent {span} does not fit an axis of {size} padded by "
                            f"{lower}+{upper}")
    steps = -(-(room - span) // stride) if ceil_out else (room - span) // stride
    axis = _padded_axis(size, kernel, stride, dilation, auto_pad, lower, upper, steps + 1)
    if ceil_out and axis.out > 1 and (axis.out - 1) * stride - axis.lower >= size:
        # A ceilOutDim window that would start past the input is dropped (as PyTorch does).
        axis = _padded_axis(size, kernel, stride, dilation, auto_pad, lower, upper, axis.out - 1)
    return axis


def _padded_axis(size: int, kernel: int, stride: int, dilation: int, auto_pad: bool, lower: int, upper: int,
                 out: int) -> WindowAxis:
    span = (kernel - 1) * dilation + 1
    if auto_pad:
        extra = size - ((out - 1) * stride + 1)
        lower = dilation * ((kernel - 1) // 2) - _trunc_half(extra)
        upper = (out - 1) * stride + span - size - lower
        return WindowAxis(size, kernel, stride, dilation, lower, upper, out, lower, upper)
    reach = (out - 1) * stride + span - size - lower
    return WindowAxis(size, kernel, stride, dilation, lower, reach, out, lower, upper)


def whole_axis(size: int) -> WindowAxis:
    """A reduction axis: one window spanning it, no stride or padding."""
    return WindowAxis(size, size, 1, 1, 0, 0, 1)


def transposed_length(length: int, kernel: int, stride: int, dilation: int, auto_pad: bool,
                      lower: int, upper: int) -> int:
    """Input length of the convolution whose output has `length` cells (CNTK's ComputeInputShape)."""
    if auto_pad:
        return (length - 1) * stride + 1
    return (length - 1) * stride + (kernel - 1) * dilation + 1 - lower - upper


@dataclass(frozen=True)
class ConvGeometry:
    """Windows over all axes of an input (BS order) and the number of output maps."""

    axes: tuple
    maps: int = 1

    @property
    def in_shape(self) -> tuple:
        return tuple(a.size for a in self.axes)

    @property
    def kernel_shape(self) -> tuple:
        return tuple(a.kernel for a in self.axes)

    @property
    def out_shape(self) -> tuple:
        outs = [a.out for a in self.axes]
        outs[-1] *= self.maps
        return tuple(outs)

    @property
    def weight_shape(self) -> tuple:
        return self.kernel_shape + (self.maps,)

    @property
    def rm_axes(self) -> tuple:
        """The axes in row-major order (the last BS axis first)."""
        return tuple(reversed(self.axes))


def _full_kernel(kernel: tuple, x_shape: tuple, op: str) -> tuple:
    if not kernel:
        raise ShapeMismatch(f"{op} needs kernelShape")
    if len(kernel) > len(x_shape):
        raise ShapeMismatch(f"{op}: kernel {format_shape(kernel)} has more axes than its input "
                            f"{format_shape(x_shape)}")
    full = list(kernel) + list(x_shape[len(kernel):])
    return tuple(x if k == 0 else k for k, x in zip(full, x_shape))


def convolution_geometry(x_shape: tuple, kernel: tuple, attrs: dict, maps: int, op: str) -> ConvGeometry:
    """CNTK's convolution geometry for an input of BS shape `x_shape`."""
    full = _full_kernel(kernel, x_shape, op)
    rank = len(x_shape)
    reduction = set(range(len(kernel), rank))
    if rank > 1 and full[-1] == x_shape[-1]:
        reduction.add(rank - 1)                  # the kernel spans the channel axis
    strides = as_ints(_conv(attrs, "strideShape"), "strideShape")
    pads = as_bools(_conv(attrs, "autoPadding"))
    lowers = as_ints(_conv(attrs, "lowerPad"), "lowerPad")
    uppers = as_ints(_conv(attrs, "upperPad"), "upperPad")
    dilations = as_ints(_conv(attrs, "dilation"), "dilation")
    if not all(as_bools(_conv(attrs, "sharing"))):
        raise ShapeMismatch(f"{op}: sharing = false (a separate kernel per position) is not supported")
    axes = []
    for i, (size, k) in enumerate(zip(x_shape, full)):
        if i in reduction:
            axes.append(whole_axis(size))
            continue
        try:
            axes.append(window_axis(size, k, per_axis(strides, i, 1), per_axis(dilations, i, 1),
                                    per_axis(pads, i, False), per_axis(lowers, i, 0), per_axis(uppers, i, 0)))
        except ShapeMismatch as err:
            raise ShapeMismatch(f"{op}: axis {i + 1} of input {format_shape(x_shape)}: {err}") from None
    return ConvGeometry(tuple(axes), maps)


def _map_count(attrs: dict, w_shape: tuple, rank: int, op: str) -> int:
    maps = as_ints(_conv(attrs, "mapCount"), "mapCount")
    if len(maps) > 1:
        raise ShapeMismatch(f"{op}: a per-axis mapCount {maps} is not supported; give one number")
    m = maps[0] if maps else 0
    if m == 0 and len(w_shape) == rank + 1:
        m = w_shape[-1]
    elif m == 0 and len(w_shape) == 2:
        m = w_shape[0]                          # legacy matrix (mapCount, kernel elements)
    if m <= 0:
        raise ShapeMismatch(f"{op}: mapCount is not given and cannot be read from the weight "
                            f"{format_shape(w_shape)}")
    return m


def _transpose_kernel(kernel: tuple, x_shape: tuple, w_shape: tuple) -> tuple:
    """ConvolutionTranspose's full kernel: the filter plus the output channels, which CNTK's layer
    puts into kernelShape; missing trailing entries come from W (`kernel ++ mapCount`)."""
    rank = len(x_shape)
    if len(kernel) > rank:
        raise ShapeMismatch(f"ConvolutionTranspose: kernel {format_shape(kernel)} has more axes than "
                            f"its input {format_shape(x_shape)}")
    from_w = tuple(w_shape[:rank]) if len(w_shape) == rank + 1 else ()
    full = []
    for i in range(rank):
        k = kernel[i] if i < len(kernel) else 0
        if k == 0 and from_w:
            k = from_w[i]
        if k == 0:
            raise ShapeMismatch("ConvolutionTranspose needs the full kernel including the output channels "
                                f"(kernelShape = filter ++ numOutputChannels), got {format_shape(kernel)}")
        full.append(k)
    return tuple(full)


def transpose_geometry(x_shape: tuple, attrs: dict, w_shape: tuple) -> ConvGeometry:
    """The convolution (output → x) whose adjoint ConvolutionTranspose computes."""
    op = "ConvolutionTranspose"
    kernel = _transpose_kernel(as_ints(_conv(attrs, "kernelShape"), "kernelShape"), x_shape, w_shape)
    maps = _map_count(attrs, w_shape, len(x_shape), op)
    if x_shape[-1] % maps:
        raise ShapeMismatch(f"{op}: the last axis of input {format_shape(x_shape)} is not a multiple of "
                            f"mapCount {maps}")
    out_shape = as_ints(_conv(attrs, "outputShape"), "outputShape")
    if not out_shape or not any(out_shape):
        out_shape = _transposed_shape(x_shape, kernel, attrs, maps)
    geo = convolution_geometry(out_shape, kernel, attrs, maps, op)
    if geo.out_shape != tuple(x_shape):
        hint = "" if as_tuple(CONV_SIGNATURE.given(attrs, "outputShape")) else " (give outputShape)"
        raise ShapeMismatch(f"{op}: an output of {format_shape(out_shape)} convolves to "
                            f"{format_shape(geo.out_shape)}, not to the input {format_shape(x_shape)}{hint}")
    return geo


def _transposed_shape(x_shape: tuple, kernel: tuple, attrs: dict, maps: int) -> tuple:
    rank = len(x_shape)
    strides = as_ints(_conv(attrs, "strideShape"), "strideShape")
    pads = as_bools(_conv(attrs, "autoPadding"))
    lowers = as_ints(_conv(attrs, "lowerPad"), "lowerPad")
    uppers = as_ints(_conv(attrs, "upperPad"), "upperPad")
    dilations = as_ints(_conv(attrs, "dilation"), "dilation")
    lengths = list(x_shape[:-1]) + [x_shape[-1] // maps]
    shape = []
    for i, (n, k) in enumerate(zip(lengths, kernel)):
        if rank > 1 and i == rank - 1:
            shape.append(k)                     # the channel axis: one window spans it
            continue
        size = transposed_length(n, k, per_axis(strides, i, 1), per_axis(dilations, i, 1),
                                 per_axis(pads, i, False), per_axis(lowers, i, 0), per_axis(uppers, i, 0))
        if size < 1:
            raise ShapeMismatch(f"ConvolutionTranspose: axis {i + 1} would have length {size}")
        shape.append(size)
    return tuple(shape)


@lru_cache(maxsize=512)
def _cached_geometry(x_shape: tuple, w_shape: tuple, frozen_attrs: tuple, transposed: bool) -> ConvGeometry:
    attrs = dict(frozen_attrs)
    if transposed:
        return transpose_geometry(x_shape, attrs, w_shape)
    op = "Convolution"
    kernel = as_ints(_conv(attrs, "kernelShape"), "kernelShape")
    if not kernel and len(w_shape) == len(x_shape) + 1:
        kernel = tuple(w_shape[:-1])
    maps = _map_count(attrs, w_shape, len(x_shape), op)
    return convolution_geometry(x_shape, kernel, attrs, maps, op)


def geometry_for(x_shape: tuple, w_shape: tuple, attrs: dict, transposed: bool) -> ConvGeometry:
    if 0 in x_shape:
        op = "ConvolutionTranspose" if transposed else "Convolution"
        raise ShapeMismatch(f"{op}: the input shape {format_shape(x_shape)} is not known yet")
    return _cached_geometry(tuple(x_shape), tuple(w_shape), freeze(attrs), transposed)


def is_transposed(attrs: dict) -> bool:
    return bool(_conv(attrs, "transpose"))


# ---- weight forms --------------------------------------------------------------------------------

def _fill_zeros(given: tuple, expected: tuple):
    """`expected` if `given` agrees with it where `given` is not 0, else None."""
    if len(given) != len(expected):
        return None
    if any(g not in (0, e) for g, e in zip(given, expected)):
        return None
    return expected


def weight_form(w_shape: tuple, geo: ConvGeometry, op: str) -> tuple:
    """('tensor' | 'matrix', the full W shape): W is `kernel ++ mapCount` or the legacy
    `(mapCount, kernel elements)` matrix; 0-dims are filled in. As in CNTK, any other fully known W
    with mapCount × kernel elements values is taken in `kernel ++ mapCount` order (an LRN layer's
    `(1:1:n:1)` weight over a `1:1:n` kernel)."""
    tensor = _fill_zeros(tuple(w_shape), geo.weight_shape)
    if tensor is not None:
        return "tensor", tensor
    matrix = _fill_zeros(tuple(w_shape), (geo.maps, num_elements(geo.kernel_shape)))
    if matrix is not None:
        return "matrix", matrix
    if 0 not in w_shape and num_elements(w_shape) == num_elements(geo.weight_shape):
        return "tensor", tuple(w_shape)
    raise ShapeMismatch(f"{op}: the weight is {format_shape(w_shape)} but kernel {format_shape(geo.kernel_shape)} "
                        f"with {geo.maps} maps needs {format_shape(geo.weight_shape)} "
                        "(kernel ++ mapCount)")


def weight_matrix(w, geo: ConvGeometry, op: str):
    """The weight as an (M, K) matrix whose columns follow the row-major kernel (channel, ..., x)."""
    form, _ = weight_form(to_bs(w.shape), geo, op)
    k = num_elements(geo.kernel_shape)
    return w.reshape(geo.maps, k) if form == "tensor" else w.T


def weight_gradient(g2, w, geo: ConvGeometry, op: str):
    """An (M, K) gradient in W's own array layout."""
    form, _ = weight_form(to_bs(w.shape), geo, op)
    return g2.reshape(w.shape) if form == "tensor" else g2.T.copy()


# ---- array plumbing (row-major, batch first) ----------------------------------------------------

def as_strided(xp, base, shape, strides):
    return xp.lib.stride_tricks.as_strided(base, shape=shape, strides=strides)


def _interior(axes) -> tuple:
    """(dst, src) slices placing the input inside the padded array (negative padding crops)."""
    dst, src = [], []
    for a in axes:
        start = max(a.lower, 0)
        stop = min(a.lower + a.size, a.padded)
        first = max(-a.lower, 0)
        dst.append(slice(start, stop))
        src.append(slice(first, first + max(stop - start, 0)))
    return (slice(None),) + tuple(dst), (slice(None),) + tuple(src)


def padded(x, axes, xp, fill=0.0, tail: int = 0):
    """`x` (B, *sizes) inside a (B, *padded) array filled with `fill`; `tail` spare elements follow
    the array in memory (the flat-shift windows read past the last sample)."""
    if not tail and all(a.trivial_padding for a in axes):
        return x
    shape = (x.shape[0],) + tuple(a.padded for a in axes)
    n = num_elements(shape)
    buf = xp.full((n + tail,), fill, dtype=x.dtype)
    out = buf[:n].reshape(shape)
    dst, src = _interior(axes)
    out[dst] = x[src]
    return out


def unpadded(g, axes, xp):
    """The input-shaped part of a padded gradient (cropped cells get 0)."""
    if all(a.trivial_padding for a in axes):
        return g
    out = xp.zeros((g.shape[0],) + tuple(a.size for a in axes), dtype=g.dtype)
    dst, src = _interior(axes)
    out[src] = g[dst]
    return out


def kernel_offsets(axes):
    return itertools.product(*(range(a.kernel) for a in axes))


def offset_region(axes, offsets) -> tuple:
    return (slice(None),) + tuple(a.region(i) for a, i in zip(axes, offsets))


# ---- im2col / col2im -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ColumnPlan:
    """How columns are laid out for one geometry (axes in row-major order).

    Columns form one (K, B·positions) matrix: K kernel elements in the row-major kernel order by
    all positions of all samples of a block, so each block is a single large GEMM. Flat plans
    (every sliding axis at stride 1) compute outputs at `positions` consecutive cells of the
    flattened padded input, starting at the first axis with more than one output: the outputs
    lie on `grid` (that axis's outputs, then the padded lengths of the later axes) and are cropped
    to `valid`. Strided plans compute exactly the output positions (`grid == valid`).
    """

    axes: tuple
    flat: bool
    positions: int
    grid: tuple
    valid: tuple
    tail: int
    kernel_elements: int


@lru_cache(maxsize=512)
def column_plan(geo: ConvGeometry) -> ColumnPlan:
    axes = geo.rm_axes
    k = num_elements(geo.kernel_shape)
    outs = tuple(a.out for a in axes)
    flat = all(a.stride == 1 or a.out == 1 for a in axes)
    if not flat:
        return ColumnPlan(axes, False, num_elements(outs), outs, outs, 0, k)
    first = next((i for i, a in enumerate(axes) if a.out > 1), len(axes) - 1)
    grid = (axes[first].out,) + tuple(a.padded for a in axes[first + 1:])
    valid = tuple(a.out for a in axes[first:])
    lengths = [a.padded for a in axes]
    reach = num_elements(grid) + sum((a.kernel - 1) * a.dilation * num_elements(lengths[j + 1:])
                                     for j, a in enumerate(axes))
    return ColumnPlan(axes, True, num_elements(grid), grid, valid, max(reach - num_elements(lengths), 0), k)


def columns(x, plan: ColumnPlan, xp):
    """im2col: x (B, *sizes) → (K, B·positions)."""
    p = padded(x, plan.axes, xp, tail=plan.tail if plan.flat else 0)
    b = p.shape[0]
    kernels = tuple(a.kernel for a in plan.axes)
    steps = tuple(s * a.dilation for s, a in zip(p.strides[1:], plan.axes))
    if plan.flat:
        view = as_strided(xp, p, kernels + (b, plan.positions), steps + (p.strides[0], p.itemsize))
    else:
        moves = tuple(s * a.stride for s, a in zip(p.strides[1:], plan.axes))
        view = as_strided(xp, p, kernels + (b,) + plan.grid, steps + (p.strides[0],) + moves)
    return xp.ascontiguousarray(view).reshape(plan.kernel_elements, b * plan.positions)


def to_grid(y, plan: ColumnPlan, maps: int, xp):
    """An output-shaped block (B, M·o_R, ..., o_1) as (M, B·positions), zeros off the grid."""
    b = y.shape[0]
    y = y.reshape((b, maps) + plan.valid).swapaxes(0, 1)
    if plan.valid == plan.grid:
        return xp.ascontiguousarray(y).reshape(maps, b * plan.positions)
    grid = xp.zeros((maps, b) + plan.grid, dtype=y.dtype)
    grid[(slice(None), slice(None)) + tuple(slice(0, v) for v in plan.valid)] = y
    return grid.reshape(maps, b * plan.positions)


def from_grid(grid, plan: ColumnPlan, batch: int, xp):
    """(M, B·positions) → (B, M, *valid), a contiguous output block."""
    maps = grid.shape[0]
    grid = grid.reshape((maps, batch) + plan.grid)
    if plan.valid != plan.grid:
        grid = grid[(slice(None), slice(None)) + tuple(slice(0, v) for v in plan.valid)]
    return xp.ascontiguousarray(grid.swapaxes(0, 1))


def add_columns(cols, plan: ColumnPlan, batch: int, xp):
    """col2im: scatter-add (K, B·positions) back onto the input (B, *sizes)."""
    axes = plan.axes
    lengths = tuple(a.padded for a in axes)
    n = num_elements(lengths)
    buf = xp.zeros((batch * n + plan.tail,), dtype=cols.dtype)
    target = buf[:batch * n].reshape((batch,) + lengths)
    kernels = tuple(a.kernel for a in axes)
    cols = cols.reshape(kernels + (batch,) + (plan.positions,) if plan.flat else kernels + (batch,) + plan.grid)
    (_add_flat if plan.flat else _add_strided)(buf, target, cols, plan, xp)
    return unpadded(target, axes, xp)


def _lead_block(plan: ColumnPlan, strides: tuple) -> bool:
    """Whether the first axis can be added as one block (the channel axis, in one strided add per
    offset of the others): the rows it adds at once must not overlap each other, within a sample
    or into the next one. `strides` are the padded array's, in elements."""
    lead = plan.axes[0]
    if not plan.flat:
        return lead.out == 1 and lead.kernel == lead.padded and lead.dilation == 1
    step = lead.dilation * strides[1]
    return plan.positions <= step and (lead.kernel - 1) * step + plan.positions <= strides[0]


def _add_flat(buf, target, cols, plan: ColumnPlan, xp) -> None:
    axes = plan.axes
    item = target.itemsize
    strides = tuple(s // item for s in target.strides)
    block = _lead_block(plan, strides)
    rest, rest_strides = (axes[1:], strides[2:]) if block else (axes, strides[1:])
    for offsets in kernel_offsets(rest):
        start = sum(i * a.dilation * s for i, a, s in zip(offsets, rest, rest_strides))
        if block:
            rows = as_strided(xp, buf[start:], (axes[0].kernel, cols.shape[-2], plan.positions),
                              (axes[0].dilation * strides[1] * item, strides[0] * item, item))
            rows += cols[(slice(None),) + offsets]
        else:
            rows = as_strided(xp, buf[start:], (cols.shape[-2], plan.positions), (strides[0] * item, item))
            rows += cols[offsets]


def _add_strided(buf, target, cols, plan: ColumnPlan, xp) -> None:
    axes = plan.axes
    block = _lead_block(plan, ())
    rest = axes[1:] if block else axes
    for offsets in kernel_offsets(rest):
        regions = tuple(a.region(i) for a, i in zip(rest, offsets))
        if block:       # cols[:, offsets] is (C, B, 1, *outs): the channel axis whole
            source = cols[(slice(None),) + offsets].swapaxes(0, 1)[(slice(None), slice(None), 0)]
            target[(slice(None), slice(None)) + regions] += source
        else:
            target[(slice(None),) + regions] += cols[offsets]


def _block_size(batch: int, plans, itemsize: int, chunk: int) -> int:
    """Samples per block: `chunk` (maxTempMemSizeInSamples) if given, else as many as keep the
    largest column matrix of `plans` within COLUMN_BLOCK_BYTES."""
    if chunk > 0:
        return max(1, min(batch, chunk))
    per_sample = max(p.kernel_elements * p.positions for p in plans) * itemsize
    return max(1, min(batch, COLUMN_BLOCK_BYTES // max(per_sample, 1)))


def _blocks(batch: int, size: int):
    for start in range(0, batch, size):
        yield slice(start, min(start + size, batch))


# ---- data gradients as a convolution with the flipped kernel -------------------------------------

@lru_cache(maxsize=512)
def flipped_geometry(geo: ConvGeometry):
    """The convolution that maps conv's output gradient to its input gradient, or None.

    When every sliding axis has stride 1 and the last axis is the whole channel axis, the data
    gradient is a stride-1 convolution of the output gradient with the kernel flipped in space and
    its two channel axes swapped, padded by span-1-lower below. That runs on the fast flat im2col
    and one GEMM instead of a scatter-add per kernel offset. Its columns have maps·k rows where
    col2im scatters channels·k, so it pays only when there are at least as many input channels as
    maps (not for a first layer's 3 colour channels).
    """
    *spatial, channel = geo.axes
    if channel.kernel != channel.size or channel.out != 1 or not channel.trivial_padding:
        return None
    if channel.size < geo.maps:
        return None
    if any(a.stride != 1 and a.out != 1 for a in spatial):
        return None
    axes = []
    for a in spatial:
        lower = a.span - 1 - a.lower
        upper = a.size - 1 + a.span - a.out - lower
        axes.append(WindowAxis(a.out, a.kernel, 1, a.dilation, lower, upper, a.size, lower, upper))
    return ConvGeometry(tuple(axes) + (whole_axis(geo.maps),), channel.size)


def flipped_weight(w2, geo: ConvGeometry, xp):
    """(M, C·k...) → (C, M·k...) with the spatial kernel reversed."""
    kernels = tuple(a.kernel for a in geo.rm_axes[1:])
    w = w2.reshape((geo.maps, geo.axes[-1].size) + kernels)
    w = w[(slice(None), slice(None)) + (slice(None, None, -1),) * len(kernels)]
    return xp.ascontiguousarray(w.swapaxes(0, 1)).reshape(geo.axes[-1].size, -1)


def _data_gradient(g_block, w2, geo: ConvGeometry, xp, flipped, grid=None):
    """conv's input gradient for one block of output gradients (B, *out_rm); `grid` is the block
    already in column layout, when the caller has it."""
    if flipped is not None:
        geo_f, w_f = flipped
        plan_f = column_plan(geo_f)
        out = from_grid(xp.matmul(w_f, columns(g_block, plan_f, xp)), plan_f, g_block.shape[0], xp)
        return out.reshape((g_block.shape[0],) + tuple(reversed(geo.in_shape)))
    plan = column_plan(geo)
    if grid is None:
        grid = to_grid(g_block, plan, geo.maps, xp)
    return add_columns(xp.matmul(w2.T, grid), plan, g_block.shape[0], xp)


def _flipped(w2, geo: ConvGeometry, xp):
    geo_f = flipped_geometry(geo)
    return None if geo_f is None else (geo_f, flipped_weight(w2, geo, xp))


def _plans(plan: ColumnPlan, flipped) -> list:
    return [plan] if flipped is None else [plan, column_plan(flipped[0])]


def _weight_product(cols, grid, xp):
    """Σ over positions of grid ⊗ columns, as (M, K). Computed as (columns · gridᵀ)ᵀ: BLAS runs
    this long, thin product markedly faster with the many-rowed matrix first."""
    return xp.matmul(cols, grid.T).T


# ---- the convolution itself, on (B, *sample) arrays ---------------------------------------------

def conv_forward(x, w2, geo: ConvGeometry, xp, chunk: int = 0):
    """y = conv(x) for x (B, *in_rm) and the (M, K) weight matrix."""
    plan = column_plan(geo)
    out_rm = tuple(reversed(geo.out_shape))
    y = xp.empty((x.shape[0],) + out_rm, dtype=x.dtype)
    for part in _blocks(x.shape[0], _block_size(x.shape[0], [plan], x.itemsize, chunk)):
        block = from_grid(xp.matmul(w2, columns(x[part], plan, xp)), plan, part.stop - part.start, xp)
        y[part] = block.reshape((-1,) + out_rm)
    return y


def conv_backward(x, w2, gy, geo: ConvGeometry, xp, need_x: bool = True, chunk: int = 0):
    """(dx or None, dW as (M, K)) of y = conv(x), given gy."""
    plan = column_plan(geo)
    flipped = _flipped(w2, geo, xp) if need_x else None
    gw = xp.zeros(w2.shape, dtype=gy.dtype)
    gx = xp.empty(x.shape, dtype=gy.dtype) if need_x else None
    for part in _blocks(x.shape[0], _block_size(x.shape[0], _plans(plan, flipped), x.itemsize, chunk)):
        grid = to_grid(gy[part], plan, geo.maps, xp)
        gw += _weight_product(columns(x[part], plan, xp), grid, xp)
        if need_x:
            gx[part] = _data_gradient(gy[part], w2, geo, xp, flipped, grid)
    return gx, gw


def conv_transpose_forward(x, w2, geo: ConvGeometry, xp, chunk: int = 0):
    """The adjoint of conv: x lives in conv's output space, the result in its input space."""
    plan = column_plan(geo)
    flipped = _flipped(w2, geo, xp)
    y = xp.empty((x.shape[0],) + tuple(reversed(geo.in_shape)), dtype=x.dtype)
    for part in _blocks(x.shape[0], _block_size(x.shape[0], _plans(plan, flipped), x.itemsize, chunk)):
        y[part] = _data_gradient(x[part], w2, geo, xp, flipped)
    return y


def conv_transpose_backward(x, w2, gy, geo: ConvGeometry, xp, need_x: bool = True, chunk: int = 0):
    """(dx or None, dW) of y = conv_transpose(x): dx = conv(gy), dW pairs x with gy's columns."""
    plan = column_plan(geo)
    out_rm = tuple(reversed(geo.out_shape))
    gw = xp.zeros(w2.shape, dtype=gy.dtype)
    gx = xp.empty(x.shape, dtype=gy.dtype) if need_x else None
    for part in _blocks(x.shape[0], _block_size(x.shape[0], [plan], x.itemsize, chunk)):
        cols = columns(gy[part], plan, xp)
        gw += _weight_product(cols, to_grid(x[part], plan, geo.maps, xp), xp)
        if need_x:
            gx[part] = from_grid(xp.matmul(w2, cols), plan, part.stop - part.start, xp).reshape((-1,) + out_rm)
    return gx, gw


# ---- the ops -------------------------------------------------------------------------------------

def _op_name(transposed: bool) -> str:
    return "ConvolutionTranspose" if transposed else "Convolution"


def _shape_rule(transposed: bool):
    def rule(in_shapes, attrs):
        w_shape, x_shape = tuple(in_shapes[0]), tuple(in_shapes[1])
        transposed_now = transposed or is_transposed(attrs)
        op = _op_name(transposed_now)
        check_layout(attrs, op)
        geo = geometry_for(x_shape, w_shape, attrs, transposed_now)
        _, full_w = weight_form(w_shape, geo, op)
        out = geo.in_shape if transposed_now else geo.out_shape
        return ShapeResult(out, infer={0: full_w}) if full_w != w_shape else out
    return rule


def samples_first(x, dyn: int):
    """x with its dynamic axes merged into one leading batch axis, and those axes."""
    sample = x.shape[dyn:]
    return x.reshape((-1,) + sample) if dyn else x.reshape((1,) + sample), x.shape[:dyn]


def _kernel_inputs(ctx, xs, attrs, transposed: bool):
    w, x = xs
    transposed = transposed or is_transposed(attrs)
    dyn = ctx.dyn[1] if len(ctx.dyn) > 1 else 0
    if ctx.dyn and ctx.dyn[0]:
        raise ShapeMismatch(f"{_op_name(transposed)}: the weight must be static (a parameter)")
    geo = geometry_for(to_bs(x.shape[dyn:]), to_bs(w.shape), attrs, transposed)
    xb, lead = samples_first(x, dyn)
    chunk = int(_conv(attrs, "maxTempMemSizeInSamples") or 0)
    return geo, weight_matrix(w, geo, _op_name(transposed)), xb, lead, transposed, chunk


def _make_kernels(transposed: bool):
    def forward(ctx, xs, attrs):
        geo, w2, xb, lead, tr, chunk = _kernel_inputs(ctx, xs, attrs, transposed)
        run = conv_transpose_forward if tr else conv_forward
        y = run(xb, w2, geo, ctx.xp, chunk)
        return y.reshape(lead + y.shape[1:])

    def backward(ctx, xs, y, gy, attrs):
        geo, w2, xb, lead, tr, chunk = _kernel_inputs(ctx, xs, attrs, transposed)
        gyb = gy.reshape((xb.shape[0],) + gy.shape[len(lead):])
        run = conv_transpose_backward if tr else conv_backward
        gx, g2 = run(xb, w2, gyb, geo, ctx.xp, chunk=chunk)
        return [weight_gradient(g2, xs[0], geo, _op_name(tr)), gx.reshape(xs[1].shape)]

    return forward, backward


def _layout(op: str):
    """The output has x's dynamic axes; W must be static. Shape inference passes the input nodes
    (`.layout` None = static), the registry checks pass plain dynamic-axis counts (0 = static)."""
    def layout(inputs, attrs):
        weight, x = (getattr(item, "layout", item) for item in inputs)
        if weight:
            raise ShapeMismatch(f"{op}: the weight (first input) must be static, a parameter or constant")
        return x
    return layout


def _w(shape):
    return InputSpec(tuple(shape), dyn=0)


def _x(shape, dyn=1):
    return InputSpec(tuple(shape), dyn=dyn)


# ---- the GPU path: cuDNN's convolutions ----------------------------------------------------------
#
# On the CuPy backend the convolution runs as cuDNN frontend graphs (`ctx.backend.cudnn`,
# runtime/gpu/cudnn.py): forward, backward-data and backward-filter, built once per shape. This
# section translates CNTK's geometry into cuDNN's terms; everything cuDNN cannot express (more than
# three sliding axes; no cuDNN installed; a shape for which cuDNN has no engine) runs the im2col
# kernels above on the GPU instead.

@dataclass(frozen=True)
class CudnnConvolution:
    """A convolution geometry as cuDNN sees it, per sample (N excluded), all in cuDNN's NC(D)HW
    order: `x_dims` the input as stored (channels, then the spatial axes), `crop` the cells cut off
    each spatial axis before cuDNN sees it (CNTK's negative automatic padding), `w_dims` the
    filter (maps, channels, kernel...), `y_dims` the output; `pre`/`post` the zero padding."""

    x_dims: tuple
    crop: tuple
    w_dims: tuple
    y_dims: tuple
    pre: tuple
    post: tuple
    stride: tuple
    dilation: tuple

    @property
    def cropped(self) -> bool:
        return any(lo or hi for lo, hi in self.crop)

    @property
    def seen_dims(self) -> tuple:
        """The input as cuDNN reads it (after cropping)."""
        return (self.x_dims[0],) + tuple(d - lo - hi for d, (lo, hi) in zip(self.x_dims[1:], self.crop))

    def crop_index(self) -> tuple:
        """The index of a (N, *x_dims) array that selects what cuDNN reads."""
        return (slice(None), slice(None)) + tuple(slice(lo, d - hi) for d, (lo, hi) in zip(self.x_dims[1:], self.crop))


def _cudnn_axis(axis: WindowAxis) -> tuple:
    """(pre, post, crop lower, crop upper) for one sliding axis: negative padding becomes a crop,
    and the upper side keeps only what changes cuDNN's output count."""
    pre, crop_lo = max(axis.lower, 0), max(-axis.lower, 0)
    post = max(axis.upper, 0)
    # cuDNN counts floor((length - span) / stride) + 1 windows; cells past the last window only
    # matter when they would fit another one.
    excess = (axis.size - crop_lo + pre + post) - axis.padded
    crop_hi = max(0, excess - (axis.stride - 1))
    return pre, post, crop_lo, crop_hi


@lru_cache(maxsize=512)
def cudnn_convolution(geo: ConvGeometry) -> CudnnConvolution | None:
    """`geo` in cuDNN's terms, or None when cuDNN cannot run it (more than three sliding axes)."""
    axes = geo.rm_axes
    lead = axes[0]
    channels_whole = len(axes) > 1 and lead.out == 1 and lead.kernel == lead.size and lead.trivial_padding
    channels, sliding = (lead.size, axes[1:]) if channels_whole else (1, axes)
    if len(sliding) > 3:
        return None
    sliding = ((WindowAxis(1, 1, 1, 1, 0, 0, 1),) * (2 - len(sliding))) + tuple(sliding)
    parts = [_cudnn_axis(a) for a in sliding]
    return CudnnConvolution(
        x_dims=(channels,) + tuple(a.size for a in sliding),
        crop=tuple((p[2], p[3]) for p in parts),
        w_dims=(geo.maps, channels) + tuple(a.kernel for a in sliding),
        y_dims=(geo.maps,) + tuple(a.out for a in sliding),
        pre=tuple(p[0] for p in parts), post=tuple(p[1] for p in parts),
        stride=tuple(a.stride for a in sliding), dilation=tuple(a.dilation for a in sliding))


def _cudnn_input(xb, conv: CudnnConvolution, xp):
    """The (N, C, *spatial) input cuDNN reads: a cropped copy where CNTK's padding crops."""
    x = xb.reshape((xb.shape[0],) + conv.x_dims)
    return xp.ascontiguousarray(x[conv.crop_index()]) if conv.cropped else x


def _cudnn_data_gradient(cudnn, gy, w, conv: CudnnConvolution, batch: int, xp):
    """The input-shaped (N, *x_dims) gradient by backward-data, zero where cuDNN's input was
    cropped; None if cuDNN declines the shape."""
    if not conv.cropped:
        gx = xp.empty((batch,) + conv.x_dims, dtype=gy.dtype)
        return gx if cudnn.backward_data(gy, w, conv, gx) else None
    seen = xp.empty((batch,) + conv.seen_dims, dtype=gy.dtype)
    if not cudnn.backward_data(gy, w, conv, seen):
        return None
    gx = xp.zeros((batch,) + conv.x_dims, dtype=gy.dtype)
    gx[conv.crop_index()] = seen
    return gx


def _gpu_kernels(transposed: bool):
    """Convolution's CuPy kernels: cuDNN where it runs the geometry, the im2col kernels elsewhere."""
    fallback_forward, fallback_backward = _make_kernels(transposed)

    def setup(ctx, xs, attrs):
        cudnn = getattr(ctx.backend, "cudnn", None)
        if cudnn is None:
            return None
        geo, w2, xb, lead, tr, _ = _kernel_inputs(ctx, xs, attrs, transposed)
        conv = cudnn_convolution(geo)
        if conv is None or not cudnn.supports(conv, xb.dtype):
            return None
        w = ctx.xp.ascontiguousarray(w2).reshape(conv.w_dims)
        return cudnn, geo, conv, w, xb, lead, tr

    def forward(ctx, xs, attrs):
        found = setup(ctx, xs, attrs)
        if found is None:
            return fallback_forward(ctx, xs, attrs)
        cudnn, geo, conv, w, xb, lead, tr = found
        batch = xb.shape[0]
        if tr:      # the adjoint: backward-data of the convolution from the output space to x's
            y = _cudnn_data_gradient(cudnn, xb.reshape((batch,) + conv.y_dims), w, conv, batch, ctx.xp)
        else:
            y = cudnn.forward(_cudnn_input(xb, conv, ctx.xp), w, conv)
        if y is None:       # no cuDNN plan for this shape
            return fallback_forward(ctx, xs, attrs)
        sample = tuple(reversed(geo.in_shape if tr else geo.out_shape))
        return y.reshape(lead + sample)

    def backward(ctx, xs, y, gy, attrs):
        found = setup(ctx, xs, attrs)
        if found is None:
            return fallback_backward(ctx, xs, y, gy, attrs)
        cudnn, geo, conv, w, xb, lead, tr = found
        xp, batch = ctx.xp, xb.shape[0]
        gw = xp.empty(conv.w_dims, dtype=gy.dtype)
        if tr:      # y = conv(x)ᵀ: dx = conv(gy), dW pairs gy (conv's input side) with x (its output side)
            image = _cudnn_input(gy.reshape((batch,) + tuple(reversed(geo.in_shape))), conv, xp)
            loss = xb.reshape((batch,) + conv.y_dims)
            gx = cudnn.forward(image, w, conv)
        else:
            image = _cudnn_input(xb, conv, xp)
            loss = gy.reshape((batch,) + conv.y_dims)
            gx = _cudnn_data_gradient(cudnn, loss, w, conv, batch, xp)
        if gx is None or not cudnn.backward_filter(image, loss, conv, gw):
            return fallback_backward(ctx, xs, y, gy, attrs)
        op = _op_name(tr)
        return [weight_gradient(gw.reshape(geo.maps, -1), xs[0], geo, op), gx.reshape(xs[1].shape)]

    return forward, backward


_conv_forward, _conv_backward = _make_kernels(False)
_convt_forward, _convt_backward = _make_kernels(True)

CONVOLUTION = register(OpDef(
    name="Convolution", arity=(2, 2), shape=_shape_rule(False), forward=_conv_forward,
    backward=_conv_backward, layout=_layout("Convolution"), signature=CONV_SIGNATURE,
    kernels={"cupy": _gpu_kernels(False)},
    doc="N-D convolution Convolution(W, x): kernelShape, mapCount, strideShape, autoPadding, lowerPad, "
        "upperPad, dilation (CNTK semantics; transpose=true gives ConvolutionTranspose)",
    checks=[
        OpCheck((_w((3, 3, 2, 4)), _x((6, 5, 2))), {"kernelShape": (3, 3), "mapCount": 4, "autoPadding": False},
                out=(4, 3, 4)),
        OpCheck((_w((3, 3, 2, 3)), _x((7, 6, 2))), {"kernelShape": (3, 3), "mapCount": 3, "strideShape": 2},
                out=(4, 3, 3)),                                       # "same" at stride 2: ceil(in/2)
        OpCheck((_w((3, 3, 1, 2)), _x((5, 4, 1))), {"kernelShape": (3, 3), "mapCount": 2, "autoPadding": False,
                                                    "lowerPad": (1, 0), "upperPad": (2, 1)}, out=(6, 3, 2)),
        OpCheck((_w((3, 3, 2, 2)), _x((7, 7, 2))), {"kernelShape": (3, 3), "mapCount": 2, "autoPadding": False,
                                                    "dilation": 2}, out=(3, 3, 2)),
        OpCheck((_w((3, 2, 3)), _x((9, 2))), {"kernelShape": (3,), "mapCount": 3, "autoPadding": False,
                                              "strideShape": 2}, out=(4, 3)),            # 1-D
        OpCheck((_w((3, 3, 2, 2, 2)), _x((4, 4, 3, 2))), {"kernelShape": (3, 3, 2), "mapCount": 2,
                                                          "autoPadding": (True, True, False)},
                out=(4, 4, 2, 2)),                                    # 3-D
        OpCheck((_w((3, 3, 2, 3)), _x((5, 5, 2))), {"kernelShape": (3, 3, 2), "mapCount": 3}, out=(5, 5, 3)),
        OpCheck((_w((2, 2, 1, 2)), _x((5, 4, 1))), {"kernelShape": (2, 2), "mapCount": 2}, out=(5, 4, 2)),
        OpCheck((_w((3, 18)), _x((4, 4, 2))), {"kernelShape": (3, 3), "mapCount": 3, "autoPadding": False},
                out=(2, 2, 3)),                                       # legacy matrix weight
        OpCheck((_w((1, 1, 3, 2)), _x((5, 5, 3))), {"kernelShape": (1, 1), "mapCount": 2, "strideShape": 2},
                out=(3, 3, 2)),                                       # 1×1 projection at stride 2
        OpCheck((_w((3, 3, 0, 2)), _x((4, 4, 3))), {"kernelShape": (3, 3), "mapCount": 2}, out=(4, 4, 2)),
                                                                      # input channels inferred
        OpCheck((_w((3, 3, 2, 2)), _x((4, 3, 2), dyn=2)), {"kernelShape": (3, 3), "mapCount": 2},
                out=(4, 3, 2)),                                       # sequences of images
        OpCheck((_w((3, 3, 2, 4)), _x((6, 6, 4))), {"kernelShape": (3, 3), "mapCount": 4, "strideShape": 2,
                                                    "transpose": True, "autoPadding": False},
                out=(13, 13, 2)),                                     # the transpose attribute
    ],
))

CONVOLUTION_TRANSPOSE = register(OpDef(
    name="ConvolutionTranspose", arity=(2, 2), shape=_shape_rule(True), forward=_convt_forward,
    backward=_convt_backward, layout=_layout("ConvolutionTranspose"), signature=CONV_SIGNATURE,
    kernels={"cupy": _gpu_kernels(True)},
    doc="transposed (fractionally strided) convolution: the adjoint of Convolution; kernelShape = filter ++ "
        "output channels, mapCount = input channels, optional outputShape",
    checks=[
        OpCheck((_w((3, 3, 2, 3)), _x((4, 4, 3))), {"kernelShape": (3, 3, 2), "mapCount": 3, "strideShape": 2,
                                                    "autoPadding": False}, out=(9, 9, 2)),
        OpCheck((_w((3, 3, 2, 3)), _x((4, 3, 3))), {"kernelShape": (3, 3, 2), "mapCount": 3, "strideShape": 2,
                                                    "outputShape": (8, 6, 2)}, out=(8, 6, 2)),
        OpCheck((_w((3, 3, 2, 3)), _x((4, 4, 3))), {"kernelShape": (3, 3, 2), "mapCount": 3, "strideShape": 2},
                out=(7, 7, 2)),                                       # autoPadding: (in-1)·stride + 1
        OpCheck((_w((3, 3, 2, 3)), _x((4, 4, 3))), {"kernelShape": (3, 3), "mapCount": 3, "autoPadding": True},
                out=(4, 4, 2)),                                       # output channels from W
        OpCheck((_w((4, 1, 2)), _x((5, 2))), {"kernelShape": (4, 1), "mapCount": 2, "strideShape": 2,
                                              "autoPadding": False, "lowerPad": 1, "upperPad": 1},
                out=(10, 1)),                                         # 1-D, explicit padding
    ],
))
