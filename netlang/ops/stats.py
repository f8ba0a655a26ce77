"""Precomputed feature statistics: Mean, InvStdDev, and the normalisation that uses them.

Mean and InvStdDev are `precompute=True`: before training, the trainer runs a pass over the data
with `ctx.options["precompute_pass"]` true, in which forward accumulates per-dimension statistics
into `ctx.state` (counts, means and sums of squared deviations in float64, merged batch by batch
with Chan's formula, so large data sets lose no precision), then calls the op's
`finalize(state, xp)`. From then on forward returns the gathered statistic, a static value of the
input's sample shape. `state["value"]` holds it (float64, row-major sample shape): that is what a
model file must save. Only real samples count: padded sequence steps are left out via `ctx.mask`.

InvStdDev is 1/sqrt(variance) with the population variance floored at 1e-10, as CNTK does, so a
constant feature gets a large finite factor instead of infinity.
"""
from __future__ import annotations

from netlang.errors import DataError
from netlang.ops.elementwise import broadcast_rule
from netlang.ops.registry import InputSpec, OpCheck, OpDef, register

VARIANCE_FLOOR = 1e-10


def _samples(ctx, x):
    """All real samples of `x` as rows of a float64 array (samples, *sample shape)."""
    dyn = ctx.dyn[0]
    rows = x.reshape((-1,) + x.shape[dyn:]) if dyn else x[None]
    if dyn == 2 and ctx.mask is not None:
        rows = rows[ctx.mask.reshape(-1)]
    return rows.astype(ctx.xp.float64)


def _accumulate(state, rows) -> None:
    if "value" in state:                       # a new precompute pass starts from scratch
        state.clear()
    n = rows.shape[0]
    if n == 0:
        return
    mean = rows.mean(axis=0)
    m2 = ((rows - mean) ** 2).sum(axis=0)
    count = state.get("count", 0)
    if count == 0:
        state.update(count=n, mean=mean, m2=m2)
        return
    total = count + n
    delta = mean - state["mean"]
    state["mean"] = state["mean"] + delta * (n / total)
    state["m2"] = state["m2"] + m2 + delta * delta * (count * n / total)
    state["count"] = total


def _mean_of(state, xp):
    return state["mean"]


def _inv_std_dev_of(state, xp):
    variance = state["m2"] / state["count"]
    return 1.0 / xp.sqrt(xp.maximum(variance, VARIANCE_FLOOR))


def _make(name, statistic):
    def forward(ctx, xs, attrs):
        x = xs[0]
        if ctx.options.get("precompute_pass"):
            _accumulate(ctx.state, _samples(ctx, x))
            if ctx.state.get("count", 0) == 0:
                return ctx.xp.zeros(x.shape[ctx.dyn[0]:], dtype=x.dtype)
            return statistic(ctx.state, ctx.xp).astype(x.dtype)   # the estimate so far
        if "value" not in ctx.state:
            raise RuntimeError(f"{name} '{ctx.node_name}' has no statistics: the precompute pass must run "
                               "(or the model be loaded) before it is evaluated")
        return ctx.state["value"].astype(x.dtype)

    def finalize(state, xp):
        if state.get("count", 0) == 0:
            raise DataError(f"{name}: no samples were read during the precompute pass",
                            hint="the reader delivered no data for the statistics")
        state["value"] = statistic(state, xp)

    return forward, finalize


def _same_shape(in_shapes, attrs):
    return tuple(in_shapes[0])


_STAT_CHECKS = [
    OpCheck((InputSpec((3,), 1),), out=(3,), grad=False),
    OpCheck((InputSpec((2, 3), 2),), out=(2, 3), grad=False),
]

_mean_forward, _mean_finalize = _make("Mean", _mean_of)
_isd_forward, _isd_finalize = _make("InvStdDev", _inv_std_dev_of)

register(OpDef(
    name="Mean", arity=(1, 1), shape=_same_shape, forward=_mean_forward, layout="none",
    differentiable=False, stateful=True, precompute=True, finalize=_mean_finalize,
    doc="per-dimension mean of the input over the training data (precomputed)", checks=list(_STAT_CHECKS),
))
register(OpDef(
    name="InvStdDev", arity=(1, 1), shape=_same_shape, forward=_isd_forward, layout="none",
    differentiable=False, stateful=True, precompute=True, finalize=_isd_finalize,
    doc="per-dimension 1/standard deviation over the training data (precomputed, variance ≥ 1e-10)",
    checks=list(_STAT_CHECKS),
))


# ---- (De)normalisation with the statistics -----------------------------------------------------

def _normalize_forward(ctx, xs, attrs):
    x, mean, inv_std = xs
    return (x - mean) * inv_std


def _normalize_backward(ctx, xs, y, gy, attrs):
    return [gy * xs[2], None, None]            # the statistics are constants: no gradient


def _denormalize_forward(ctx, xs, attrs):
    x, mean, inv_std = xs
    return x / inv_std + mean


def _denormalize_backward(ctx, xs, y, gy, attrs):
    return [gy / xs[2], None, None]


def _norm_checks():
    stat = InputSpec((3,), 0, grad=False)
    inv = InputSpec((3,), 0, "positive", grad=False)
    return [
        OpCheck((InputSpec((3,), 1), stat, inv), out=(3,)),
        OpCheck((InputSpec((3, 2), 2), stat, inv), out=(3, 2)),
    ]


register(OpDef(
    name="PerDimMeanVarNormalization", arity=(3, 3), shape=broadcast_rule, forward=_normalize_forward,
    backward=_normalize_backward, elementwise=True, checks=_norm_checks(),
    doc="(x − mean) .* invStdDev (inputs x, mean, invStdDev); no gradient into the statistics",
))
register(OpDef(
    name="PerDimMeanVarDeNormalization", arity=(3, 3), shape=broadcast_rule, forward=_denormalize_forward,
    backward=_denormalize_backward, elementwise=True, checks=_norm_checks(),
    doc="x ./ invStdDev + mean, the inverse of PerDimMeanVarNormalization",
))
