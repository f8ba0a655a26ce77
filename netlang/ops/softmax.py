"""Softmax, LogSoftmax and Hardmax over all elements of each sample (CNTK's "column").

Kernels flatten the sample axes of each sample to one vector, so a `(10)` vector, a `(5 x 2)`
tensor and a static value (one sample) are treated alike. Computations subtract the per-sample
maximum first, so large logits neither overflow nor lose precision.
"""
from __future__ import annotations

from netlang.ops.registry import InputSpec, OpCheck, OpDef, register


def per_sample(x, dyn: int):
    """`x` as (dynamic axes..., elements of one sample)."""
    return x.reshape(x.shape[:dyn] + (-1,))


def log_softmax(z, xp):
    """Stable log-softmax over the last axis."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def _same_shape(in_shapes, attrs):
    return tuple(in_shapes[0])


def _softmax_forward(ctx, xs, attrs):
    z = xs[0]
    return ctx.xp.exp(log_softmax(per_sample(z, ctx.dyn[0]), ctx.xp)).reshape(z.shape)


def _softmax_backward(ctx, xs, y, gy, attrs):
    d = ctx.dyn[0]
    y2, g2 = per_sample(y, d), per_sample(gy, d)
    return [(y2 * (g2 - (g2 * y2).sum(axis=-1, keepdims=True))).reshape(y.shape)]


def _log_softmax_forward(ctx, xs, attrs):
    z = xs[0]
    return log_softmax(per_sample(z, ctx.dyn[0]), ctx.xp).reshape(z.shape)


def _log_softmax_backward(ctx, xs, y, gy, attrs):
    d = ctx.dyn[0]
    y2, g2 = per_sample(y, d), per_sample(gy, d)
    return [(g2 - ctx.xp.exp(y2) * g2.sum(axis=-1, keepdims=True)).reshape(y.shape)]


def _hardmax_forward(ctx, xs, attrs):
    z = xs[0]
    z2 = per_sample(z, ctx.dyn[0])
    winner = z2.argmax(axis=-1)[..., None]         # the first maximum when there are ties
    positions = ctx.xp.arange(z2.shape[-1])
    return (positions == winner).astype(z.dtype).reshape(z.shape)


def _checks(grad=True):
    return [
        OpCheck((InputSpec((5,), 1, low=-3.0, high=3.0),), out=(5,), grad=grad),
        OpCheck((InputSpec((3, 2), 1, low=-3.0, high=3.0),), out=(3, 2), grad=grad),
        OpCheck((InputSpec((4,), 2, low=-3.0, high=3.0),), out=(4,), grad=grad),
        OpCheck((InputSpec((4,), 0, low=-3.0, high=3.0),), out=(4,), grad=grad),
    ]


register(OpDef(
    name="Softmax", arity=(1, 1), shape=_same_shape, forward=_softmax_forward,
    backward=_softmax_backward, checks=_checks(), doc="exp(z) / Σ exp(z) over all elements of each sample",
))
register(OpDef(
    name="LogSoftmax", arity=(1, 1), shape=_same_shape, forward=_log_softmax_forward,
    backward=_log_softmax_backward, checks=_checks(), doc="z − log Σ exp(z) over all elements of each sample",
))
register(OpDef(
    name="Hardmax", arity=(1, 1), shape=_same_shape, forward=_hardmax_forward, differentiable=False,
    checks=_checks(grad=False), doc="1 at the largest element of each sample (the first on ties), 0 elsewhere",
))
