"""Ops that rearrange static axes: Reshape, Slice, Splice, TransposeDimensions.

Axis attributes are 1-based BrainScript axes. The kernels work out the output shape by running the
op's own shape rule on the input's BS shape, so rule and kernel cannot disagree.
"""
from __future__ import annotations

from netlang.ir.shapes import format_shape, num_elements, rm_axis, to_bs, to_runtime
from netlang.ops.registry import InputSpec, OpCheck, OpDef, Param, ShapeMismatch, Signature, register, unbroadcast


def _bs_shape(x, dyn: int) -> tuple:
    return to_bs(x.shape[dyn:])


# ---- Reshape (CNTK's NewReshape) ---------------------------------------------------------------

RESHAPE_SIGNATURE = Signature((Param("shape", aliases=("dims",)), Param("beginAxis", 0), Param("endAxis", 0)))


def _target_dims(attrs) -> list:
    shape = RESHAPE_SIGNATURE.given(attrs, "shape")
    if shape is None:
        raise ShapeMismatch("Reshape needs a 'shape'")
    return [int(shape)] if isinstance(shape, (int, float)) else [int(d) for d in shape]


def reshape_rule(in_shapes, attrs):
    """Replace BS axes [beginAxis, endAxis) (1-based, endAxis exclusive; 0 = from the first / to the
    end) by `shape`, in which one 0 is inferred from the number of elements."""
    shape = tuple(in_shapes[0])
    target = _target_dims(attrs)
    begin, end = int(RESHAPE_SIGNATURE.value(attrs, "beginAxis")), int(RESHAPE_SIGNATURE.value(attrs, "endAxis"))
    lo = begin - 1 if begin > 0 else 0
    hi = end - 1 if end > 0 else len(shape)
    if not 0 <= lo <= hi <= len(shape):
        raise ShapeMismatch(f"Reshape: axis range beginAxis={begin}, endAxis={end} does not fit "
                            f"{format_shape(shape)}")
    replaced = shape[lo:hi]
    zeros = [k for k, d in enumerate(target) if d == 0]
    if len(zeros) > 1:
        raise ShapeMismatch(f"Reshape: more than one dimension of {format_shape(target)} is 0 (inferred)")
    known = num_elements(d for d in target if d != 0)
    if 0 not in replaced:                     # input fully known: infer the 0 and check the count
        count = num_elements(replaced)
        if zeros:
            if count % known:
                raise ShapeMismatch(f"Reshape: {format_shape(replaced)} ({count} elements) is not a "
                                    f"multiple of the known dimensions of {format_shape(target)}")
            target[zeros[0]] = count // known
        elif count != known:
            raise ShapeMismatch(f"Reshape: cannot reshape {format_shape(replaced)} ({count} elements) "
                                f"to {format_shape(target)} ({known} elements)")
    return shape[:lo] + tuple(target) + shape[hi:]


def _reshape_forward(ctx, xs, attrs):
    x, dyn = xs[0], ctx.dyn[0]
    out = reshape_rule([_bs_shape(x, dyn)], attrs)
    return x.reshape(x.shape[:dyn] + to_runtime(out))


def _reshape_backward(ctx, xs, y, gy, attrs):
    return [gy.reshape(xs[0].shape)]


register(OpDef(
    name="Reshape", arity=(1, 1), shape=reshape_rule, forward=_reshape_forward,
    backward=_reshape_backward, aliases=("NewReshape",), signature=RESHAPE_SIGNATURE,
    doc="reinterpret axes [beginAxis, endAxis) as `shape` (one 0 inferred); the data is unchanged",
    checks=[
        OpCheck((InputSpec((3, 4), 1),), attrs={"shape": (12,)}, out=(12,)),
        OpCheck((InputSpec((3, 4), 1),), attrs={"shape": (2, 0)}, out=(2, 6)),
        OpCheck((InputSpec((5, 2, 3, 2), 1),), attrs={"shape": (6,), "beginAxis": 2, "endAxis": 4},
                out=(5, 6, 2)),
        OpCheck((InputSpec((6, 2), 2),), attrs={"shape": (3, 0), "beginAxis": 1, "endAxis": 2},
                out=(3, 2, 2)),
        OpCheck((InputSpec((2, 3), 0),), attrs={"shape": (3, 2)}, out=(3, 2)),
    ],
))


# ---- Slice -------------------------------------------------------------------------------------

SLICE_SIGNATURE = Signature((Param("beginIndex"), Param("endIndex"), Param("axis", 1)))


def _slice_attr(attrs, name) -> int:
    return int(SLICE_SIGNATURE.value(attrs, name))


def _slice_bounds(dim: int, attrs) -> tuple[int, int]:
    """CNTK's index rules: a negative begin counts from the end; an end ≤ 0 counts from the end,
    so endIndex 0 means "to the end" (e.g. beginIndex -1, endIndex 0 is the last element)."""
    begin, end = _slice_attr(attrs, "beginIndex"), _slice_attr(attrs, "endIndex")
    lo = begin + dim if begin < 0 else begin
    hi = end + dim if end <= 0 else end
    if not 0 <= lo < hi <= dim:
        raise ShapeMismatch(f"Slice: beginIndex {begin}, endIndex {end} select nothing or reach outside "
                            f"an axis of dimension {dim}")
    return lo, hi


def slice_rule(in_shapes, attrs):
    shape = tuple(in_shapes[0])
    axis = _slice_attr(attrs, "axis")
    if axis < 1:
        raise ShapeMismatch("Slice: this primitive slices a static axis (axis ≥ 1); slicing the time "
                            "axis (axis < 0) is a sequence operation")
    if axis > len(shape):
        raise ShapeMismatch(f"Slice: axis {axis} is not an axis of {format_shape(shape)}")
    dim = shape[axis - 1]
    if dim == 0:                                # not inferred yet: the slice size is still unknown
        return shape
    lo, hi = _slice_bounds(dim, attrs)
    return shape[:axis - 1] + (hi - lo,) + shape[axis:]


def _slice_index(x, attrs):
    axis = rm_axis(_slice_attr(attrs, "axis"), x.ndim)
    lo, hi = _slice_bounds(x.shape[axis], attrs)
    index = [slice(None)] * x.ndim
    index[axis] = slice(lo, hi)
    return tuple(index)


def _slice_forward(ctx, xs, attrs):
    return xs[0][_slice_index(xs[0], attrs)]


def _slice_backward(ctx, xs, y, gy, attrs):
    gx = ctx.xp.zeros_like(xs[0])
    gx[_slice_index(xs[0], attrs)] = gy
    return [gx]


register(OpDef(
    name="Slice", arity=(1, 1), shape=slice_rule, forward=_slice_forward, backward=_slice_backward,
    signature=SLICE_SIGNATURE, time_axis_form="SequenceSlice",
    doc="elements [beginIndex, endIndex) of a static axis; negative indices count from the end",
    checks=[
        OpCheck((InputSpec((5, 3), 1),), attrs={"beginIndex": 1, "endIndex": 3}, out=(2, 3)),
        OpCheck((InputSpec((5, 3), 1),), attrs={"beginIndex": -2, "endIndex": 0, "axis": 1}, out=(2, 3)),
        OpCheck((InputSpec((5, 3), 2),), attrs={"beginIndex": 0, "endIndex": -1, "axis": 2}, out=(5, 2)),
        OpCheck((InputSpec((4,), 0),), attrs={"beginIndex": 1, "endIndex": 2}, out=(1,)),
    ],
))


# ---- Splice (RowStack) -------------------------------------------------------------------------

SPLICE_SIGNATURE = Signature((Param("axis", 1),))


def _splice_axis(attrs) -> int:
    return int(SPLICE_SIGNATURE.value(attrs, "axis"))


def splice_rule(in_shapes, attrs):
    """Stack along `axis` (may be one past the last axis: a new axis). Shorter shapes are padded with
    1s; the other dimensions must agree, where 1 broadcasts (as CNTK does) and 0 is not yet known."""
    axis = _splice_axis(attrs)
    if axis < 1:
        raise ShapeMismatch(f"Splice: axis must be 1 or more, got {axis}")
    rank = max([axis] + [len(s) for s in in_shapes])
    padded = [tuple(s) + (1,) * (rank - len(s)) for s in in_shapes]
    out = []
    for k in range(rank):
        dims = [s[k] for s in padded]
        if k == axis - 1:
            out.append(0 if 0 in dims else sum(dims))
            continue
        known = set(dims) - {0, 1}
        if len(known) > 1:
            shapes = ", ".join(format_shape(t) for t in in_shapes)
            raise ShapeMismatch(f"Splice along axis {axis}: dimension {k + 1} differs between the "
                                f"operands {shapes}")
        out.append(known.pop() if known else (0 if 0 in dims else 1))
    return tuple(out)


def _align(x, dyn: int, out_dyn: int, rank: int):
    """`x` with out_dyn leading dynamic axes (size 1 where it has none) and `rank` sample axes."""
    sample = x.shape[dyn:]
    pad = (1,) * (rank - len(sample))
    if dyn == out_dyn:
        lead = x.shape[:dyn]
    elif dyn == 0:
        lead = (1,) * out_dyn
    else:                                       # a batch value next to a sequence value
        lead = (1,) + x.shape[:1]
    return x.reshape(lead + pad + sample)


def _splice_layout(xs, dyns, out_dyn, attrs):
    """Output BS shape, its leading dynamic sizes, and each operand aligned to the output rank."""
    out = splice_rule([_bs_shape(x, d) for x, d in zip(xs, dyns)], attrs)
    aligned = [_align(x, d, out_dyn, len(out)) for x, d in zip(xs, dyns)]
    lead = tuple(max(a.shape[k] for a in aligned) for k in range(out_dyn))
    return out, lead, aligned


def _splice_forward(ctx, xs, attrs):
    out, lead, aligned = _splice_layout(xs, ctx.dyn, ctx.out_dyn, attrs)
    axis = _splice_axis(attrs)
    ndim = ctx.out_dyn + len(out)
    pieces = []
    for a in aligned:
        dims = list(out)
        dims[axis - 1] = a.shape[rm_axis(axis, ndim)]
        pieces.append(ctx.xp.broadcast_to(a, lead + to_runtime(dims)))
    return ctx.backend.concatenate(pieces, axis=rm_axis(axis, ndim))


def _splice_backward(ctx, xs, y, gy, attrs):
    out, lead, aligned = _splice_layout(xs, ctx.dyn, ctx.out_dyn, attrs)
    axis = rm_axis(_splice_axis(attrs), gy.ndim)
    grads, start = [], 0
    for x, a in zip(xs, aligned):
        stop = start + a.shape[axis]
        index = [slice(None)] * gy.ndim
        index[axis] = slice(start, stop)
        grads.append(unbroadcast(gy[tuple(index)], a.shape).reshape(x.shape))
        start = stop
    return grads


register(OpDef(
    name="Splice", arity=(1, -1), shape=splice_rule, forward=_splice_forward, backward=_splice_backward,
    aliases=("RowStack",), signature=SPLICE_SIGNATURE,
    doc="concatenate the inputs along a static axis (one past the last creates a new axis)",
    checks=[
        OpCheck((InputSpec((2, 3), 1), InputSpec((4, 3), 1)), out=(6, 3)),
        OpCheck((InputSpec((3, 2), 1), InputSpec((3, 1), 1), InputSpec((3, 2), 1)), attrs={"axis": 2},
                out=(3, 5)),
        OpCheck((InputSpec((3,), 1), InputSpec((3,), 1)), attrs={"axis": 2}, out=(3, 2)),
        OpCheck((InputSpec((2,), 0), InputSpec((3,), 2)), out=(5,)),
        OpCheck((InputSpec((2, 1), 1), InputSpec((3, 4), 1)), out=(5, 4)),
        OpCheck((InputSpec((2,), 1),), out=(2,)),
    ],
))


# ---- TransposeDimensions -----------------------------------------------------------------------

TRANSPOSE_SIGNATURE = Signature((Param("axis1"), Param("axis2")))


def _transpose_axes(attrs) -> tuple[int, int]:
    a1, a2 = int(TRANSPOSE_SIGNATURE.value(attrs, "axis1")), int(TRANSPOSE_SIGNATURE.value(attrs, "axis2"))
    if a1 < 1 or a2 < 1:
        raise ShapeMismatch(f"TransposeDimensions: axes must be 1 or more, got {a1} and {a2}")
    return a1, a2


def transpose_rule(in_shapes, attrs):
    """Swap two BS axes; an axis beyond the rank is a dimension of 1 (the shape is padded)."""
    a1, a2 = _transpose_axes(attrs)
    shape = tuple(in_shapes[0])
    dims = list(shape) + [1] * (max(a1, a2) - len(shape))
    dims[a1 - 1], dims[a2 - 1] = dims[a2 - 1], dims[a1 - 1]
    return tuple(dims)


def _transpose_forward(ctx, xs, attrs):
    x, dyn = xs[0], ctx.dyn[0]
    a1, a2 = _transpose_axes(attrs)
    rank = max(a1, a2, x.ndim - dyn)
    padded = x.reshape(x.shape[:dyn] + (1,) * (rank - (x.ndim - dyn)) + x.shape[dyn:])
    return padded.swapaxes(rm_axis(a1, padded.ndim), rm_axis(a2, padded.ndim))


def _transpose_backward(ctx, xs, y, gy, attrs):
    a1, a2 = _transpose_axes(attrs)
    return [gy.swapaxes(rm_axis(a1, gy.ndim), rm_axis(a2, gy.ndim)).reshape(xs[0].shape)]


register(OpDef(
    name="TransposeDimensions", arity=(1, 1), shape=transpose_rule, forward=_transpose_forward,
    backward=_transpose_backward, signature=TRANSPOSE_SIGNATURE, doc="swap BS axes axis1 and axis2",
    checks=[
        OpCheck((InputSpec((3, 4), 1),), attrs={"axis1": 1, "axis2": 2}, out=(4, 3)),
        OpCheck((InputSpec((2, 3, 4), 2),), attrs={"axis1": 3, "axis2": 1}, out=(4, 3, 2)),
        OpCheck((InputSpec((3,), 1),), attrs={"axis1": 1, "axis2": 2}, out=(1, 3)),
        OpCheck((InputSpec((3, 2), 0),), attrs={"axis1": 2, "axis2": 1}, out=(2, 3)),
    ],
))
