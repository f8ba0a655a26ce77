"""Reductions over static axes: ReduceElements and its fixed-operation forms.

`ReduceElements(x, reductionOp, axis)`: `reductionOp` ∈ Sum | LogSum | Mean | Max | Min; `axis` is a
1-based BS axis, which keeps dimension 1, or 0/None for all static axes, which gives shape `(1)`.
Dynamic axes are never reduced here (the criteria do that).

ReduceSum, ReduceLogSum, ReduceMean, ReduceMax and ReduceMin are separate ops with the operation
fixed (CNTK.core.bs defines them as ReduceElements with that `reductionOp`), so a node carries the
name the user wrote and needs no `reductionOp` attribute. The Max/Min gradient goes to every
position equal to the extreme (all of them on ties).
"""
from __future__ import annotations

from netlang.errors import suggest
from netlang.ir.shapes import format_shape, rm_axis
from netlang.ops.registry import InputSpec, OpCheck, OpDef, Param, ShapeMismatch, Signature, register

REDUCTION_OPS = ("Sum", "LogSum", "Mean", "Max", "Min")
# axis None (or 0): all static axes.
SIGNATURE = Signature((Param("reductionOp"), Param("axis", None)))
FIXED_SIGNATURE = Signature((Param("axis", None),))


def _reduction_op(attrs, fixed=None) -> str:
    op = fixed or SIGNATURE.given(attrs, "reductionOp")
    if op not in REDUCTION_OPS:
        hint = suggest(str(op), REDUCTION_OPS) or f"one of {', '.join(REDUCTION_OPS)}"
        raise ShapeMismatch(f"ReduceElements: unknown reductionOp '{op}' ({hint})")
    return op


def _axis(attrs) -> int:
    axis = SIGNATURE.value(attrs, "axis")
    return 0 if axis is None else int(axis)


def _reduce_rule(in_shapes, attrs, fixed=None):
    _reduction_op(attrs, fixed)
    shape, axis = tuple(in_shapes[0]), _axis(attrs)
    if axis == 0:
        return (1,)
    if not 1 <= axis <= len(shape):
        raise ShapeMismatch(f"reduction axis {axis} is not an axis of {format_shape(shape)} "
                            f"(axes are 1..{len(shape)}, or 0/None for all)")
    return shape[:axis - 1] + (1,) + shape[axis:]


def _array_axes(x, dyn: int, axis: int) -> tuple:
    return tuple(range(dyn, x.ndim)) if axis == 0 else (rm_axis(axis, x.ndim),)


def _kept(x, dyn: int, axis: int, y):
    """`y` (output layout) with the reduced axes kept as 1s, to broadcast against `x`."""
    if axis != 0:
        return y
    return y.reshape(x.shape[:dyn] + (1,) * (x.ndim - dyn))


def _reduce(x, axes, op, xp):
    if op == "Sum":
        return x.sum(axis=axes, keepdims=True)
    if op == "Mean":
        return x.mean(axis=axes, keepdims=True)
    if op == "Max":
        return x.max(axis=axes, keepdims=True)
    if op == "Min":
        return x.min(axis=axes, keepdims=True)
    top = x.max(axis=axes, keepdims=True)          # LogSum: log Σ exp, shifted by the maximum
    return top + xp.log(xp.exp(x - top).sum(axis=axes, keepdims=True))


def _reduce_gradient(x, y, gy, axes, op, xp):
    if op == "Sum":
        return xp.zeros_like(x) + gy
    if op == "Mean":
        count = 1
        for a in axes:
            count *= x.shape[a]
        return xp.zeros_like(x) + gy / count
    if op == "LogSum":
        return gy * xp.exp(x - y)
    return gy * (x == y)                           # Max/Min: to the extreme position(s)


def _make(fixed=None):
    def rule(in_shapes, attrs):
        return _reduce_rule(in_shapes, attrs, fixed)

    def forward(ctx, xs, attrs):
        x, dyn, axis = xs[0], ctx.dyn[0], _axis(attrs)
        y = _reduce(x, _array_axes(x, dyn, axis), _reduction_op(attrs, fixed), ctx.xp)
        return y if axis != 0 else y.reshape(x.shape[:dyn] + (1,))

    def backward(ctx, xs, y, gy, attrs):
        x, dyn, axis = xs[0], ctx.dyn[0], _axis(attrs)
        axes = _array_axes(x, dyn, axis)
        op = _reduction_op(attrs, fixed)
        return [_reduce_gradient(x, _kept(x, dyn, axis, y), _kept(x, dyn, axis, gy), axes, op, ctx.xp)]

    return rule, forward, backward


def _checks(op=None):
    attrs = {} if op is None else {"reductionOp": op}

    def case(shape, dyn, axis, out):
        return OpCheck((InputSpec(shape, dyn, low=-2.0, high=2.0),), attrs={**attrs, "axis": axis}, out=out)

    return [
        case((3, 4), 1, 1, (1, 4)),
        case((3, 4), 1, 2, (3, 1)),
        case((3, 4), 1, 0, (1,)),
        case((2, 3, 2), 2, 2, (2, 1, 2)),
        case((3, 2), 0, None, (1,)),
    ]


_rule, _forward, _backward = _make()
register(OpDef(
    name="ReduceElements", arity=(1, 1), shape=_rule, forward=_forward, backward=_backward, signature=SIGNATURE,
    doc="Sum | LogSum | Mean | Max | Min over one static axis (kept as 1) or all static axes",
    checks=[c for op in REDUCTION_OPS for c in _checks(op)[:3]] + _checks("Sum")[3:],
))

for _op in REDUCTION_OPS:
    _rule, _forward, _backward = _make(_op)
    register(OpDef(
        name=f"Reduce{_op}", arity=(1, 1), shape=_rule, forward=_forward, backward=_backward,
        signature=FIXED_SIGNATURE,
        doc=f"ReduceElements with reductionOp '{_op}'", checks=_checks(),
    ))
