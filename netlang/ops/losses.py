"""Training criteria and evaluation metrics.

Criteria (`layout="none"`) reduce over the dynamic axes: each computes one value per sample (over
all elements of the sample, CNTK's column), then sums over the samples of the minibatch. For
sequences, `ctx.mask` (T, N) says which steps are real; padded steps count for nothing, in the value
and in the gradient. The output is a static `(1)` value. Labels, probabilities given as data and
instance weights get no gradient.

CosDistance is per sample (output `(1)` per sample, common layout) and is CNTK's cosine *similarity*.

CrossEntropyWithSoftmax and ClassificationError take CNTK's `axis`: 0 (the default) makes all elements
of a sample one distribution; a 1-based axis makes the classes run along that axis and every position
of the other axes a prediction of its own (Fast R-CNN's `4:R` ROI labels with `axis = 1`: one class
distribution per region). The criterion is the sum over the positions, then over the samples.
"""
from __future__ import annotations

from netlang.ir.shapes import format_shape, rm_axis
from netlang.ops.registry import InputSpec, OpCheck, OpDef, Param, ShapeMismatch, Signature, register, unbroadcast
from netlang.ops.softmax import log_softmax, per_sample

# ---- shared pieces -----------------------------------------------------------------------------

def _same_shape(name, in_shapes):
    """Check that operands agree as CNTK's criteria need: broadcast-compatible with the same elements,
    i.e. the same shape once axes of dimension 1 are left out (`[n]` labels against an `[n x 1]`
    output); 0 = not yet inferred matches anything. Returns the first operand's shape."""
    def essential(shape):
        return [d for d in shape if d != 1]

    first = essential(in_shapes[0])
    for shape in in_shapes[1:]:
        other = essential(shape)
        if len(other) != len(first) or any(a and b and a != b for a, b in zip(first, other)):
            shapes = " and ".join(format_shape(s) for s in in_shapes)
            raise ShapeMismatch(f"{name}: operands {shapes} must have the same shape (axes of dimension 1 "
                                "may differ, as [n] and [n x 1])")
    return tuple(in_shapes[0])


def _criterion_rule(name, operands=2):
    def rule(in_shapes, attrs):
        _same_shape(name, in_shapes[:operands])
        return (1,)
    return rule


def _valid(ctx, lead: tuple):
    """Boolean (T, N) mask of real sequence steps when the per-sample values are a sequence, else None."""
    if ctx.mask is not None and len(lead) == 2:
        return ctx.mask.reshape(lead)
    return None


def _masked_sum(ctx, per):
    """Σ of per-sample values over the real samples, as a static (1) array."""
    valid = _valid(ctx, per.shape)
    if valid is not None:
        per = ctx.xp.where(valid, per, 0)       # where, not multiply: padding may hold inf/NaN
    return ctx.xp.reshape(per.sum(), (1,))


def _masked(ctx, g2, trailing: int = 1):
    """Per-sample gradients `g2` (lead..., `trailing` sample axes) with padded steps zeroed."""
    valid = _valid(ctx, g2.shape[:-trailing])
    return g2 if valid is None else ctx.xp.where(valid.reshape(valid.shape + (1,) * trailing), g2, 0)


def _to_input(g2, x, dyn, xp):
    """A gradient over flattened (and possibly broadcast) samples, back in the shape of input `x`."""
    return unbroadcast(g2, per_sample(x, dyn).shape).reshape(x.shape)


def _scalar(gy):
    return gy.reshape(())


def _floor(p, xp):
    # log(0) would make 0·log(0) a NaN; flooring at the smallest normal number keeps it finite.
    return xp.maximum(p, xp.finfo(p.dtype).tiny)


# ---- the class axis ------------------------------------------------------------------------------

CLASS_AXIS = Param("axis", 0)


def _class_axis(attrs, signature) -> int:
    return int(signature.value(attrs, "axis"))


def _check_class_axis(name, in_shapes, axis: int) -> None:
    shape = tuple(in_shapes[0])
    if not 0 <= axis <= len(shape):
        raise ShapeMismatch(f"{name}: axis {axis} is not an axis of {format_shape(shape)} "
                            f"(0: the whole sample, 1..{len(shape)}: the class axis)")
    if axis and len(in_shapes[1]) != len(shape):
        raise ShapeMismatch(f"{name}: with axis = {axis}, the operands {format_shape(shape)} and "
                            f"{format_shape(in_shapes[1])} must have the same axes")


def _by_class(x, dyn: int, axis: int, xp):
    """`x` as (dynamic axes..., positions, classes): axis 0 makes the whole sample one position; a
    1-based axis moves that axis last and flattens the others into positions."""
    if axis == 0:
        return per_sample(x, dyn)[..., None, :]
    moved = xp.moveaxis(x, rm_axis(axis, x.ndim), -1)
    return moved.reshape(x.shape[:dyn] + (-1, moved.shape[-1]))


def _from_by_class(g, x, dyn: int, axis: int, xp):
    """A gradient laid out as `_by_class(x)` (possibly broadcast over dynamic axes) in x's shape."""
    if axis == 0:
        return _to_input(g[..., 0, :], x, dyn, xp)
    sample = x.shape[dyn:]
    at = rm_axis(axis, len(sample))                          # the class axis among the sample axes
    moved_sample = sample[:at] + sample[at + 1:] + sample[at:at + 1]
    lead = g.shape[:-2]
    g = xp.moveaxis(g.reshape(lead + moved_sample), -1, len(lead) + at)
    return unbroadcast(g, x.shape)


# ---- CrossEntropyWithSoftmax(label, z [, axis]) --------------------------------------------------

CROSS_ENTROPY_SIGNATURE = Signature((CLASS_AXIS,))


def _cews_rule(in_shapes, attrs):
    _same_shape("CrossEntropyWithSoftmax", in_shapes)
    _check_class_axis("CrossEntropyWithSoftmax", in_shapes, _class_axis(attrs, CROSS_ENTROPY_SIGNATURE))
    return (1,)


def _cews_parts(ctx, xs, attrs):
    axis = _class_axis(attrs, CROSS_ENTROPY_SIGNATURE)
    label, z = xs
    return axis, _by_class(label, ctx.dyn[0], axis, ctx.xp), _by_class(z, ctx.dyn[1], axis, ctx.xp)


def _cews_forward(ctx, xs, attrs):
    _, l3, z3 = _cews_parts(ctx, xs, attrs)
    logp = log_softmax(z3, ctx.xp)
    ctx.saved["logp"] = logp
    return _masked_sum(ctx, -(l3 * logp).sum(axis=(-2, -1)))


def _cews_backward(ctx, xs, y, gy, attrs):
    axis, l3, z3 = _cews_parts(ctx, xs, attrs)
    logp = ctx.saved.get("logp")
    if logp is None:
        logp = log_softmax(z3, ctx.xp)
    # d/dz of −Σ l·log softmax(z) is softmax(z)·Σl − l (softmax − label for one-hot labels).
    g3 = (ctx.xp.exp(logp) * l3.sum(axis=-1, keepdims=True) - l3) * _scalar(gy)
    return [None, _from_by_class(_masked(ctx, g3, 2), xs[1], ctx.dyn[1], axis, ctx.xp)]


def _label(shape, dyn=1):
    return InputSpec(shape, dyn, "onehot", grad=False)


def _z(shape, dyn=1, low=-2.0, high=2.0):
    return InputSpec(shape, dyn, "float", low, high)


def _labels_per_position(shape, dyn=1):
    """Label weights for the `axis` cases: 0/1 at random (the checks' one-hot kind is one-hot per
    sample, not per position; the gradient rule holds for any weights)."""
    return InputSpec(shape, dyn, "binary", grad=False)


register(OpDef(
    name="CrossEntropyWithSoftmax", arity=(2, 2), shape=_cews_rule,
    forward=_cews_forward, backward=_cews_backward, layout="none", signature=CROSS_ENTROPY_SIGNATURE,
    doc="−Σ label · log softmax(z), fused and stable, over the sample or along `axis`; summed over "
        "positions and samples",
    checks=[
        OpCheck((_label((5,)), _z((5,))), out=(1,)),
        OpCheck((_label((4,), 2), _z((4,), 2)), out=(1,)),
        OpCheck((_label((3, 2)), _z((3, 2))), out=(1,)),
        OpCheck((_label((5,)), _z((5, 1))), out=(1,)),              # CNTK: broadcast-compatible operands
        OpCheck((_labels_per_position((4, 3)), _z((4, 3))), {"axis": 1}, out=(1,)),
        OpCheck((_labels_per_position((2, 3, 2)), _z((2, 3, 2))), {"axis": 2}, out=(1,)),
        OpCheck((_labels_per_position((3, 2), 2), _z((3, 2), 2)), {"axis": 1}, out=(1,)),
    ],
))


# ---- CrossEntropy(label, prob) -----------------------------------------------------------------

def _ce_forward(ctx, xs, attrs):
    label, prob = xs
    l2, p2 = per_sample(label, ctx.dyn[0]), per_sample(prob, ctx.dyn[1])
    return _masked_sum(ctx, -(l2 * ctx.xp.log(_floor(p2, ctx.xp))).sum(axis=-1))


def _ce_backward(ctx, xs, y, gy, attrs):
    label, prob = xs
    l2, p2 = per_sample(label, ctx.dyn[0]), per_sample(prob, ctx.dyn[1])
    g2 = -l2 / _floor(p2, ctx.xp) * _scalar(gy)
    return [None, _to_input(_masked(ctx, g2), prob, ctx.dyn[1], ctx.xp)]


register(OpDef(
    name="CrossEntropy", arity=(2, 2), shape=_criterion_rule("CrossEntropy"), forward=_ce_forward,
    backward=_ce_backward, layout="none", doc="−Σ label · log(prob); summed over samples",
    checks=[
        OpCheck((_label((4,)), InputSpec((4,), 1, "positive")), out=(1,)),
        OpCheck((InputSpec((3,), 2, "positive", grad=False), InputSpec((3,), 2, "positive")), out=(1,)),
    ],
))


# ---- ClassificationError(label, z [, topN]) ----------------------------------------------------

CLASSIFICATION_ERROR_SIGNATURE = Signature((Param("topN", 1), CLASS_AXIS))


def _top_n(xs, attrs) -> int:
    if len(xs) == 3:                           # CNTK passes topN > 1 as a Constant third input
        return int(round(float(xs[2].reshape(-1)[0])))
    return int(CLASSIFICATION_ERROR_SIGNATURE.value(attrs, "topN"))


def _classification_error_rule(in_shapes, attrs):
    _same_shape("ClassificationError", in_shapes[:2])
    _check_class_axis("ClassificationError", in_shapes, _class_axis(attrs, CLASSIFICATION_ERROR_SIGNATURE))
    if len(in_shapes) == 3 and tuple(in_shapes[2]) not in ((1,), ()):
        raise ShapeMismatch(f"ClassificationError: topN must be a scalar, got {format_shape(in_shapes[2])}")
    top_n = CLASSIFICATION_ERROR_SIGNATURE.value(attrs, "topN")
    if int(top_n) < 1:
        raise ShapeMismatch(f"ClassificationError: topN must be 1 or more, got {top_n}")
    return (1,)


def _classification_error_forward(ctx, xs, attrs):
    label, z = xs[0], xs[1]
    xp = ctx.xp
    axis = _class_axis(attrs, CLASSIFICATION_ERROR_SIGNATURE)
    l3, z3 = xp.broadcast_arrays(_by_class(label, ctx.dyn[0], axis, xp), _by_class(z, ctx.dyn[1], axis, xp))
    target = l3.argmax(axis=-1)[..., None]
    target_score = xp.take_along_axis(z3, target, axis=-1)
    # The label's class is among the top N when fewer than N scores beat it.
    beaten_by = (z3 > target_score).sum(axis=-1)
    wrong = (beaten_by >= _top_n(xs, attrs)).astype(z.dtype)
    return _masked_sum(ctx, wrong.sum(axis=-1))


register(OpDef(
    name="ClassificationError", arity=(2, 3), shape=_classification_error_rule,
    forward=_classification_error_forward, layout="none", differentiable=False,
    aliases=("ErrorPrediction",), signature=CLASSIFICATION_ERROR_SIGNATURE,
    doc="number of samples (with axis: positions) whose label class is not among the topN highest scores of z",
    checks=[
        OpCheck((_label((5,)), _z((5,))), out=(1,), grad=False),
        OpCheck((_label((5,)), _z((5,))), attrs={"topN": 3}, out=(1,), grad=False),
        OpCheck((_label((4,), 2), _z((4,), 2)), out=(1,), grad=False),
        OpCheck((_label((5,)), _z((5,)), InputSpec((1,), 0, "positive", 2.0, 2.4, grad=False)), out=(1,),
                grad=False),
        OpCheck((_labels_per_position((4, 3)), _z((4, 3))), {"axis": 1}, out=(1,), grad=False),
    ],
))


# ---- SquareError(a, b) -------------------------------------------------------------------------

def _square_error_forward(ctx, xs, attrs):
    a2, b2 = per_sample(xs[0], ctx.dyn[0]), per_sample(xs[1], ctx.dyn[1])
    return _masked_sum(ctx, ((a2 - b2) ** 2).sum(axis=-1))


def _square_error_backward(ctx, xs, y, gy, attrs):
    a, b = xs
    diff = per_sample(a, ctx.dyn[0]) - per_sample(b, ctx.dyn[1])
    g2 = _masked(ctx, 2.0 * diff * _scalar(gy))
    return [_to_input(g2, a, ctx.dyn[0], ctx.xp), _to_input(-g2, b, ctx.dyn[1], ctx.xp)]


register(OpDef(
    name="SquareError", arity=(2, 2), shape=_criterion_rule("SquareError"), forward=_square_error_forward,
    backward=_square_error_backward, layout="none", doc="Σ (a − b)²; summed over samples",
    checks=[
        OpCheck((_z((3, 2)), _z((3, 2))), out=(1,)),
        OpCheck((_z((4,), 2), _z((4,), 2)), out=(1,)),
        OpCheck((_z((3,), 0), _z((3,), 1)), out=(1,)),
    ],
))


# ---- Logistic(label, prob [, weight]) ----------------------------------------------------------

def _logistic_parts(ctx, xs):
    xp = ctx.xp
    y2, p2 = per_sample(xs[0], ctx.dyn[0]), per_sample(xs[1], ctx.dyn[1])
    w2 = per_sample(xs[2], ctx.dyn[2]) if len(xs) == 3 else 1.0
    return y2, _floor(p2, xp), _floor(1.0 - p2, xp), w2


def _logistic_forward(ctx, xs, attrs):
    xp = ctx.xp
    y2, p, q, w2 = _logistic_parts(ctx, xs)
    per = -(w2 * (y2 * xp.log(p) + (1.0 - y2) * xp.log(q))).sum(axis=-1)
    return _masked_sum(ctx, per)


def _logistic_backward(ctx, xs, y, gy, attrs):
    y2, p, q, w2 = _logistic_parts(ctx, xs)
    g2 = _masked(ctx, -w2 * (y2 / p - (1.0 - y2) / q) * _scalar(gy))
    return [None, _to_input(g2, xs[1], ctx.dyn[1], ctx.xp)] + [None] * (len(xs) - 2)


def _logistic_rule(in_shapes, attrs):
    _same_shape("Logistic", in_shapes[:2])
    if len(in_shapes) == 3 and tuple(in_shapes[2]) not in ((1,), ()):
        raise ShapeMismatch(f"Logistic: the instance weight must have shape [1], got {format_shape(in_shapes[2])}")
    return (1,)


_PROB = InputSpec((3,), 1, "float", 0.1, 0.9)

register(OpDef(
    name="Logistic", arity=(2, 3), shape=_logistic_rule, forward=_logistic_forward,
    backward=_logistic_backward, layout="none", aliases=("WeightedLogistic",),
    doc="−Σ w·[y·log p + (1−y)·log(1−p)] (binary cross entropy, optional instance weight w)",
    checks=[
        OpCheck((InputSpec((3,), 1, "binary", grad=False), _PROB), out=(1,)),
        OpCheck((InputSpec((3,), 1, "binary", grad=False), _PROB, InputSpec((1,), 1, "positive", grad=False)),
                out=(1,)),
        OpCheck((InputSpec((2,), 2, "binary", grad=False), InputSpec((2,), 2, "float", 0.1, 0.9)), out=(1,)),
    ],
))


# ---- MatrixL1Reg(m), MatrixL2Reg(m) ------------------------------------------------------------

def _l1_forward(ctx, xs, attrs):
    return _masked_sum(ctx, ctx.xp.abs(per_sample(xs[0], ctx.dyn[0])).sum(axis=-1))


def _l1_backward(ctx, xs, y, gy, attrs):
    m2 = per_sample(xs[0], ctx.dyn[0])
    return [_masked(ctx, ctx.xp.sign(m2) * _scalar(gy)).reshape(xs[0].shape)]


def _l2_forward(ctx, xs, attrs):
    return ctx.xp.sqrt(_masked_sum(ctx, (per_sample(xs[0], ctx.dyn[0]) ** 2).sum(axis=-1)))


def _l2_backward(ctx, xs, y, gy, attrs):
    m2 = per_sample(xs[0], ctx.dyn[0])
    norm = ctx.xp.maximum(y.reshape(()), ctx.xp.finfo(y.dtype).tiny)
    return [_masked(ctx, m2 / norm * _scalar(gy)).reshape(xs[0].shape)]


def _reg_checks(kind):
    return [
        OpCheck((InputSpec((3, 4), 0, kind),), out=(1,)),
        OpCheck((InputSpec((3,), 1, kind),), out=(1,)),
        OpCheck((InputSpec((2,), 2, kind),), out=(1,)),
    ]


def _any_shape(in_shapes, attrs):
    return (1,)


register(OpDef(
    name="MatrixL1Reg", arity=(1, 1), shape=_any_shape, forward=_l1_forward, backward=_l1_backward,
    layout="none", doc="Σ |m| over all elements", checks=_reg_checks("nonzero"),
))
register(OpDef(
    name="MatrixL2Reg", arity=(1, 1), shape=_any_shape, forward=_l2_forward, backward=_l2_backward,
    layout="none", doc="‖m‖, the Frobenius norm (not squared, as CNTK)", checks=_reg_checks("float"),
))


# ---- CosDistance(a, b): per sample -------------------------------------------------------------

def _cos_parts(ctx, xs):
    xp = ctx.xp
    a2, b2 = per_sample(xs[0], ctx.dyn[0]), per_sample(xs[1], ctx.dyn[1])
    tiny = xp.finfo(a2.dtype).tiny
    na = xp.sqrt((a2 * a2).sum(axis=-1, keepdims=True))
    nb = xp.sqrt((b2 * b2).sum(axis=-1, keepdims=True))
    return a2, b2, na, nb, xp.maximum(na * nb, tiny)   # floor: a zero vector gives 0, not NaN


def _cos_forward(ctx, xs, attrs):
    a2, b2, na, nb, denom = _cos_parts(ctx, xs)
    return (a2 * b2).sum(axis=-1, keepdims=True) / denom


def _cos_backward(ctx, xs, y, gy, attrs):
    xp = ctx.xp
    a2, b2, na, nb, denom = _cos_parts(ctx, xs)
    tiny = xp.finfo(a2.dtype).tiny
    ga = gy * (b2 / denom - y * a2 / xp.maximum(na * na, tiny))
    gb = gy * (a2 / denom - y * b2 / xp.maximum(nb * nb, tiny))
    return [_to_input(ga, xs[0], ctx.dyn[0], xp), _to_input(gb, xs[1], ctx.dyn[1], xp)]


register(OpDef(
    name="CosDistance", arity=(2, 2), shape=_criterion_rule("CosDistance"), forward=_cos_forward,
    backward=_cos_backward, doc="cosine of the angle between a and b, per sample (shape [1])",
    checks=[
        OpCheck((_z((4,)), _z((4,))), out=(1,)),
        OpCheck((_z((3, 2), 2), _z((3, 2), 2)), out=(1,)),
        OpCheck((_z((4,), 0), _z((4,))), out=(1,)),
    ],
))
