"""BatchNormalization and LayerNormalization.

BatchNormalization(x, scale, bias, runMean, runVariance, runCount; spatial, normalizationTimeConstant,
blendTimeConstant, epsilon) — CNTK's BatchNormalizationNode (reference §4.2, §4.4):

* **Statistics** are per element of the sample (`spatial = false`), or per channel, the last BS
  axis, pooled over all other sample axes (`spatial = true`, for `W:H:C` images), and always over
  the minibatch: all samples, and for sequences all valid steps (padding is left out via `ctx.mask`).
* **Parameter shapes**: scale, bias, runMean and runVariance hold C values (spatial) or one per
  element of x. Any BS shape with that many elements is accepted — `(C)`, CNTK's own `(C:1)`
  (the layer's `(0:1)` inferred) and `(1:1:C)` alike; for per-element statistics `x`'s shape or
  `(elements:1)`. 0-dims are inferred that way; runCount is `(1)`.
* **Training** (`ctx.training`) normalises with the batch mean and the biased batch variance, blended
  with the running statistics by `blendTimeConstant` (weight of the running statistics
  `b = τ_b / (τ_b + n)` for n samples in the batch; 0 → batch only (default), infinity → running
  only), and then updates runMean / runVariance IN PLACE (the executor hands over the live parameter
  arrays) with CNTK's exponential averaging: new = (1-f)·old + f·batch with
  `f = 1 - exp(-n / normalizationTimeConstant)`. `normalizationTimeConstant = 0` (CNTK's default
  for the primitive) gives f = 1, the running statistics are those of the last minibatch, as CNTK
  documents; infinity freezes them; a negative value keeps an exact cumulative average over all
  samples seen (f = n / (n + seen), CNTK's corpus-statistics mode). The first update after
  runCount = 0 always takes the batch statistics whole. The running variance is fed the unbiased
  batch variance (× m/(m-1), m values per statistic), as cuDNN does (the engine CNTK's
  BatchNormalizationLayer uses by default); `useCntkEngine` has no effect here.
* **runCount** counts the samples seen, in place (CNTK's samplesSeen). Without a runCount input
  the count lives in `ctx.state["samples_seen"]`.
* **Evaluation** (not training) normalises with runMean / runVariance. A model that has seen no
  sample yet (runCount 0) would divide by sqrt(0 + ε); CNTK refuses to run then, we normalise with
  the minibatch's own statistics instead (without updating anything), so evaluating an untrained
  model gives finite numbers.
* **Gradients** flow to x, scale and bias, through the batch statistics (the full batch-norm
  backward, scaled by 1 - b when blended); in evaluation mode x's gradient is scale / sqrt(var + ε).

LayerNormalization(x, scale, bias; epsilon = 1e-5) normalises each sample (each sequence step) over
all its elements, then applies `scale .* x̂ + bias`, where scale and bias broadcast like
BrainScript elementwise operands (`(1)` for CNTK's LayerNormalizationLayer scalars, or x's shape).
CNTK's layer computes x̂ = (x - mean) / sqrt(mean((x - mean)²)) with no ε; the default ε keeps a
constant sample (and padded sequence steps) finite; pass `epsilon = 0` for CNTK's exact formula.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from netlang.ir.shapes import broadcast_shapes, format_shape, num_elements
from netlang.ops.registry import (
    InputSpec,
    OpCheck,
    OpDef,
    Param,
    ShapeMismatch,
    ShapeResult,
    Signature,
    register,
    unbroadcast,
)

DEFAULT_EPSILON = 1e-5

PARAMETER_NAMES = ("scale", "bias", "runMean", "runVariance", "runCount")


# ---- shapes --------------------------------------------------------------------------------------

def _inferred_parameter(shape: tuple, count: int, x_shape: tuple, spatial: bool, name: str) -> tuple:
    """The full BS shape of a BatchNormalization parameter that needs `count` elements."""
    if 0 not in shape:
        if num_elements(shape) != count:
            what = f"{count} (one per channel, the last axis)" if spatial else f"{count} (one per element of x)"
            raise ShapeMismatch(f"BatchNormalization: {name} is {format_shape(shape)} but needs {what} elements "
                                f"for input {format_shape(x_shape)}")
        return shape
    if len(shape) == len(x_shape) and not any(shape):
        return (1,) * (len(x_shape) - 1) + (x_shape[-1],) if spatial else tuple(x_shape)
    known = num_elements(d for d in shape if d)
    if shape.count(0) == 1 and count % known == 0:
        return tuple(d or count // known for d in shape)
    raise ShapeMismatch(f"BatchNormalization: cannot infer {name} {format_shape(shape)} from input "
                        f"{format_shape(x_shape)}")


def _bn_shape(in_shapes, attrs):
    x = tuple(in_shapes[0])
    if 0 in x:
        raise ShapeMismatch(f"BatchNormalization: the input shape {format_shape(x)} is not known yet")
    spatial = _config(attrs).spatial                 # also validates the numeric attributes
    count = x[-1] if spatial and x else num_elements(x)
    infer = {}
    for i, shape in enumerate(in_shapes[1:], start=1):
        shape = tuple(shape)
        want = 1 if i == 5 else count
        full = _inferred_parameter(shape, want, x, spatial and i != 5, PARAMETER_NAMES[i - 1])
        if full != shape:
            infer[i] = full
    return ShapeResult(x, infer) if infer else x


def _ln_shape(in_shapes, attrs):
    number(LAYER_NORM_SIGNATURE, attrs, "epsilon", "LayerNormalization")
    x = tuple(in_shapes[0])
    infer = {}
    for i, shape in enumerate(in_shapes[1:], start=1):
        shape = tuple(shape)
        full = tuple(x[k] if d == 0 and k < len(x) else d for k, d in enumerate(shape))
        try:
            combined = broadcast_shapes(x, full)
        except ValueError:
            combined = None
        if combined is None or combined[:len(x)] != x or any(d != 1 for d in combined[len(x):]):
            name = ("scale", "bias")[i - 1]
            raise ShapeMismatch(f"LayerNormalization: {name} {format_shape(shape)} does not broadcast to the input "
                                f"{format_shape(x)}")
        if full != shape:
            infer[i] = full
    return ShapeResult(x, infer) if infer else x


def _static_parameters(op: str):
    """The output has x's dynamic axes; the parameters must be static. Shape inference passes the
    input nodes (`.layout` None = static), the registry checks plain dynamic-axis counts."""
    def layout(inputs, attrs):
        x, *params = (getattr(item, "layout", item) for item in inputs)
        if any(params):
            raise ShapeMismatch(f"{op}: the parameters (all inputs after the first) must be static")
        return x
    return layout


# ---- batch normalisation -------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchNormConfig:
    spatial: bool
    time_constant: float
    blend_time_constant: float
    epsilon: float


# `useCntkEngine`, `disableRegularization` and `imageLayout` are CNTK's; they change nothing here
# (regularisation of batch-norm parameters follows the SGD block's disableRegInBatchNormalization).
BATCH_NORM_SIGNATURE = Signature((
    Param("spatial", False), Param("normalizationTimeConstant", 0), Param("blendTimeConstant", 0),
    Param("epsilon", DEFAULT_EPSILON), Param("useCntkEngine", True), Param("disableRegularization", False),
    Param("imageLayout", "CHW")))
LAYER_NORM_SIGNATURE = Signature((Param("epsilon", DEFAULT_EPSILON),))


def number(signature: Signature, attrs: dict, name: str, op: str) -> float:
    value = signature.value(attrs, name)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ShapeMismatch(f"{op}: {name} must be a number, got {value!r}") from None


def _config(attrs) -> BatchNormConfig:
    op = "BatchNormalization"
    blend = number(BATCH_NORM_SIGNATURE, attrs, "blendTimeConstant", op)
    if blend < 0:
        raise ShapeMismatch("BatchNormalization: blendTimeConstant must not be negative")
    return BatchNormConfig(bool(BATCH_NORM_SIGNATURE.value(attrs, "spatial")),
                           number(BATCH_NORM_SIGNATURE, attrs, "normalizationTimeConstant", op),
                           blend, number(BATCH_NORM_SIGNATURE, attrs, "epsilon", op))


def exp_avg_factor(time_constant: float, seen: float, samples: float) -> float:
    """Weight of this minibatch's statistics in the running statistics (CNTK's ComputeExpAvgFactor)."""
    if seen <= 0:
        return 1.0
    if time_constant < 0:
        return samples / (samples + seen)
    if math.isinf(time_constant):
        return 0.0
    return 1.0 - math.exp(-samples / time_constant) if time_constant > 0 else 1.0


def blend_factor(blend_time_constant: float, seen: float, samples: float) -> float:
    """Weight of the running statistics in the statistics used to normalise (ComputeBlendFactor)."""
    if seen <= 0 or blend_time_constant == 0:
        return 0.0
    if math.isinf(blend_time_constant):
        return 1.0
    return blend_time_constant / (blend_time_constant + samples)


@dataclass
class Statistics:
    """What one forward normalised with, kept for the backward; vectors of the C statistics."""

    mean: object            # μ used
    inv_std: object         # 1 / sqrt(var + ε)
    blend: float            # weight of the running statistics in μ and var (1: constants)
    batch_mean: object      # None when the batch statistics were not used
    batch_var: object
    count: float            # values behind each statistic (valid samples × pooled cells)
    samples: float          # valid samples (sequence steps) in the minibatch


def _canonical(a, dyn: int, spatial: bool):
    """x-shaped `a` as (L, C, R): L dynamic positions, C statistics, R cells pooled per statistic."""
    lead = num_elements(a.shape[:dyn])
    sample = a.shape[dyn:]
    if spatial and sample:
        return a.reshape(lead, sample[0], -1)
    return a.reshape(lead, -1, 1)


def _col(v):
    """A vector of C statistics shaped to broadcast over (L, C, R)."""
    return v.reshape(1, -1, 1)


def _step_weights(ctx, dyn: int, dtype):
    """(L,) with 1 for valid sequence steps and 0 for padding; None when all are valid."""
    if dyn != 2 or ctx.mask is None or bool(ctx.mask.all()):
        return None
    return ctx.mask.reshape(-1).astype(dtype)


def _moments(x3, weights, xp):
    """Batch mean and biased variance per statistic, the count behind them, and x3 - mean."""
    if weights is None:
        count = float(x3.shape[0] * x3.shape[2])
        mean = xp.einsum("lcr->c", x3) / count
        centred = x3 - _col(mean)
        return mean, xp.einsum("lcr,lcr->c", centred, centred) / count, count, centred
    count = float(weights.sum()) * x3.shape[2]
    mean = xp.einsum("lcr,l->c", x3, weights) / max(count, 1.0)
    centred = x3 - _col(mean)
    return mean, xp.einsum("lcr,lcr,l->c", centred, centred, weights) / max(count, 1.0), count, centred


def _samples_seen(ctx, run_count) -> float:
    if run_count is not None:
        return float(run_count.reshape(-1)[0])
    return float(ctx.state.get("samples_seen", 0.0))


def _statistics(ctx, x3, run_mean, run_var, seen: float, cfg: BatchNormConfig):
    """(Statistics, x3 - μ) for this minibatch, without side effects."""
    xp = ctx.xp
    running_mean = run_mean.reshape(-1).astype(x3.dtype)
    running_var = run_var.reshape(-1).astype(x3.dtype)
    if not ctx.training and seen > 0:
        stats = Statistics(running_mean, 1.0 / xp.sqrt(running_var + cfg.epsilon), 1.0, None, None, 0.0, 0.0)
        return stats, x3 - _col(running_mean)
    weights = _step_weights(ctx, ctx.dyn[0] if ctx.dyn else 0, x3.dtype)
    batch_mean, batch_var, count, centred = _moments(x3, weights, xp)
    samples = count / x3.shape[2]
    blend = blend_factor(cfg.blend_time_constant, seen, samples) if ctx.training else 0.0
    mean, var = batch_mean, batch_var
    if blend:
        mean = blend * running_mean + (1 - blend) * batch_mean
        var = blend * running_var + (1 - blend) * batch_var
        centred -= _col(mean - batch_mean)
    stats = Statistics(mean, 1.0 / xp.sqrt(var + cfg.epsilon), blend, batch_mean, batch_var, count, samples)
    return stats, centred


def _update_running(ctx, stats: Statistics, run_mean, run_var, run_count, seen: float, cfg: BatchNormConfig):
    """Fold this minibatch into runMean / runVariance / runCount, in place."""
    factor = exp_avg_factor(cfg.time_constant, seen, stats.samples)
    if factor > 0:
        unbiased = stats.batch_var * (stats.count / (stats.count - 1)) if stats.count > 1 else stats.batch_var
        run_mean[...] = ((1 - factor) * run_mean.reshape(-1) + factor * stats.batch_mean).reshape(run_mean.shape)
        run_var[...] = ((1 - factor) * run_var.reshape(-1) + factor * unbiased).reshape(run_var.shape)
    if factor != 0 or stats.blend != 1:
        if run_count is not None:
            run_count[...] = seen + stats.samples
        else:
            ctx.state["samples_seen"] = seen + stats.samples


def _bn_forward(ctx, xs, attrs):
    x, scale, bias, run_mean, run_var = xs[:5]
    run_count = xs[5] if len(xs) > 5 else None
    cfg = _config(attrs)
    seen = _samples_seen(ctx, run_count)
    stats, y3 = _statistics(ctx, _canonical(x, ctx.dyn[0] if ctx.dyn else 0, cfg.spatial), run_mean, run_var,
                            seen, cfg)
    if ctx.training:
        _update_running(ctx, stats, run_mean, run_var, run_count, seen, cfg)
    y3 *= _col(scale.reshape(-1) * stats.inv_std)        # (x - μ) becomes y in place
    y3 += _col(bias.reshape(-1))
    y = y3.reshape(x.shape)
    ctx.saved["batch_norm"] = (y, stats)
    return y


def _bn_backward(ctx, xs, y, gy, attrs):
    x, scale, bias = xs[:3]
    xp = ctx.xp
    cfg = _config(attrs)
    dyn = ctx.dyn[0] if ctx.dyn else 0
    x3, g3 = _canonical(x, dyn, cfg.spatial), _canonical(gy, dyn, cfg.spatial)
    saved = ctx.saved.get("batch_norm")
    if saved is not None and saved[0] is y:
        stats = saved[1]
        centred = x3 - _col(stats.mean)
    else:   # not this output's forward: recompute, leaving the running statistics alone
        run_count = xs[5] if len(xs) > 5 else None
        stats, centred = _statistics(ctx, x3, xs[3], xs[4], _samples_seen(ctx, run_count), cfg)
    sum_g = xp.einsum("lcr->c", g3)
    sum_g_centred = xp.einsum("lcr,lcr->c", g3, centred)
    gain = scale.reshape(-1) * stats.inv_std
    gx3 = g3 * _col(gain)
    share = 1.0 - stats.blend                  # how much of μ and var came from this batch
    if share and stats.batch_mean is not None and stats.count > 0:
        # Through the batch statistics, which only valid steps fed (padding outputs still depend
        # on them, so every output's gradient counts in the sums above).
        by_var = gain * stats.inv_std * stats.inv_std * share * sum_g_centred / stats.count
        shift = by_var * (stats.mean - stats.batch_mean) + gain * share * sum_g / stats.count
        centred *= _col(by_var)
        centred += _col(shift)
        weights = _step_weights(ctx, dyn, x.dtype)
        if weights is not None:
            centred *= weights.reshape(-1, 1, 1)
        gx3 -= centred
    gscale = (sum_g_centred * stats.inv_std).reshape(scale.shape).astype(scale.dtype)
    gbias = sum_g.reshape(bias.shape).astype(bias.dtype)
    return [gx3.reshape(x.shape), gscale, gbias] + [None] * (len(xs) - 3)



# ---- batch normalisation on the GPU --------------------------------------------------------------
#
# The CuPy kernels follow the NumPy ones above step by step, without reading anything back to the
# host in training: two reductions over the (L, C, R) view (Σx, then Σ(x-μ)²), one per-channel
# kernel that forms the statistics, the blend with the running statistics and their update (the
# samples seen are read on the device, so CNTK's time-constant rules are evaluated there), one
# one-thread kernel for the count, and one elementwise kernel for y. Backward: two reductions and
# two kernels. Evaluation reads the samples seen once per node (whether running statistics exist).

BN_SOURCE = r"""
__device__ double exp_avg_factor(double tc, double seen, double samples) {
    if (seen <= 0) return 1.0;
    if (tc < 0) return samples / (samples + seen);
    if (isinf(tc)) return 0.0;
    return tc > 0 ? 1.0 - exp(-samples / tc) : 1.0;
}

__device__ double blend_factor(double btc, double seen, double samples) {
    if (seen <= 0 || btc == 0) return 0.0;
    if (isinf(btc)) return 1.0;
    return btc / (btc + samples);
}

// Per statistic c: the mean and variance used, 1/sqrt(var + eps), scale/sqrt(var + eps), the
// blend weight, and (training) the running statistics folded forward.
extern "C" __global__ void statistics(const T* sum_x, const T* sum_sq, const T* count, T* run_mean, T* run_var,
                                      const T* seen, const T* scale, T* mean_used, T* inv_std, T* gain, T* blend_out,
                                      T* batch_mean, double training, double update, double use_running, double tc, double btc,
                                      double eps, double cells, long long C) {
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += (long long)blockDim.x * gridDim.x) {
        T mean, var, blend;
        if (use_running != 0) {
            mean = run_mean[c];
            var = run_var[c];
            blend = (T)1;
        } else {
            const T n = count[0];
            const T safe = n > (T)1 ? n : (T)1;
            const T bm = sum_x[c] / safe;
            const T bv = sum_sq[c] / safe;
            const double samples = (double)n / cells;
            const double b = training != 0 ? blend_factor(btc, (double)seen[0], samples) : 0.0;
            mean = bm;
            var = bv;
            if (b != 0) {
                mean = (T)b * run_mean[c] + (T)(1 - b) * bm;
                var = (T)b * run_var[c] + (T)(1 - b) * bv;
            }
            blend = (T)b;
            batch_mean[c] = bm;
            if (update != 0) {
                const double f = exp_avg_factor(tc, (double)seen[0], samples);
                if (f > 0) {
                    const T unbiased = n > (T)1 ? bv * (n / (n - (T)1)) : bv;
                    run_mean[c] = (T)(1 - f) * run_mean[c] + (T)f * bm;
                    run_var[c] = (T)(1 - f) * run_var[c] + (T)f * unbiased;
                }
            }
        }
        const T inv = (T)1 / sqrt(var + (T)eps);
        mean_used[c] = mean;
        inv_std[c] = inv;
        gain[c] = scale[c] * inv;
        blend_out[c] = blend;
    }
}

// The samples seen, after the statistics kernel has read them (one thread).
extern "C" __global__ void count_samples(const T* count, T* seen, double tc, double btc, double cells, long long one) {
    if (blockIdx.x * blockDim.x + threadIdx.x != 0) return;
    const double samples = (double)count[0] / cells;
    const double before = (double)seen[0];
    const double f = exp_avg_factor(tc, before, samples);
    const double b = blend_factor(btc, before, samples);
    if (f != 0 || b != 1) seen[0] = (T)(before + samples);
}

// Backward per statistic: the terms through the batch statistics and the parameter gradients.
extern "C" __global__ void backward_terms(const T* sum_g, const T* sum_gc, const T* count, const T* mean_used,
                                          const T* batch_mean, const T* inv_std, const T* gain, const T* blend,
                                          T* by_var, T* shift, T* gscale, T* gbias, double batch_used, long long C) {
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += (long long)blockDim.x * gridDim.x) {
        const T n = count[0];
        const T share = (T)1 - blend[c];
        T v = (T)0, s = (T)0;
        if (batch_used != 0 && share != (T)0 && n > (T)0) {
            v = gain[c] * inv_std[c] * inv_std[c] * share * sum_gc[c] / n;
            s = v * (mean_used[c] - batch_mean[c]) + gain[c] * share * sum_g[c] / n;
        }
        by_var[c] = v;
        shift[c] = s;
        gscale[c] = sum_gc[c] * inv_std[c];
        gbias[c] = sum_g[c];
    }
}
"""


@dataclass
class DeviceStatistics:
    """What a GPU forward normalised with (all per-statistic device vectors), for its backward."""

    mean: object
    inv_std: object
    gain: object
    blend: object
    batch_mean: object
    count: object
    batch_used: bool


def _doubles(*values) -> tuple:
    """Launch arguments of C type double."""
    return tuple(np.float64(v) for v in values)


def _gpu_weights(ctx, dyn: int, dtype):
    """(L, 1, 1) step weights of a masked sequence (1 real, 0 padding), or None."""
    if dyn != 2 or ctx.mask is None:
        return None
    return ctx.mask.reshape(-1, 1, 1).astype(dtype)


def _per_channel(kernel, *operands):
    """Σ over axes 0 and 2 of a (L, C, R) map, in two passes: along the contiguous R first (one
    output per (l, c), so every multiprocessor has rows to reduce), then over L. A single reduction
    over axes (0, 2) hands each channel's strided sum to one thread block: on an H200 that took
    36 ms of ResNet-50's first batch norm (batch 64), 84 % of the whole step."""
    return kernel(*operands, axis=2).sum(axis=0)


def _gpu_sums(kernels, x3, weights, mean=None):
    """Σ over L and R of x (or of (x - mean)², with mean shaped (1, C, 1)), weighted by steps."""
    if mean is None:
        if weights is None:
            return _per_channel(kernels.reduction("T x", "T y", "x", "a + b", "y = a", "0", "bn_sum"), x3)
        return _per_channel(kernels.reduction("T x, T w", "T y", "x * w", "a + b", "y = a", "0", "bn_wsum"),
                            x3, weights)
    if weights is None:
        return _per_channel(kernels.reduction("T x, T m", "T y", "(x - m) * (x - m)", "a + b", "y = a", "0",
                                              "bn_sq"), x3, mean)
    return _per_channel(kernels.reduction("T x, T m, T w", "T y", "(x - m) * (x - m) * w", "a + b", "y = a", "0",
                                          "bn_wsq"), x3, mean, weights)


def _gpu_seen(ctx, run_count):
    """The device array holding the samples seen: runCount, or this node's own counter."""
    if run_count is not None:
        return run_count.reshape(-1)
    seen = ctx.state.get("samples_seen")
    if seen is None or not hasattr(seen, "shape"):
        seen = ctx.state["samples_seen"] = ctx.xp.full((1,), float(seen or 0.0), dtype=ctx.backend.dtype)
    return seen


def _gpu_statistics(ctx, x3, dyn, run_mean, run_var, seen, scale, cfg: BatchNormConfig,
                    update: bool) -> DeviceStatistics:
    """The statistics of this minibatch; with `update` (a training forward) the running ones and
    the samples seen move on."""
    xp, kernels = ctx.xp, ctx.backend.kernels
    dtype, C, cells = x3.dtype, x3.shape[1], float(x3.shape[2])
    use_running = not ctx.training and bool(ctx.state.get("seen_positive"))
    if not ctx.training and not use_running and float(ctx.backend.to_host(seen)[0]) > 0:
        ctx.state["seen_positive"] = use_running = True      # one read per node: running statistics exist
    vectors = [xp.empty(C, dtype=dtype) for _ in range(5)]
    mean_used, inv_std, gain, blend, batch_mean = vectors
    weights = None if use_running else _gpu_weights(ctx, dyn, dtype)
    if use_running:
        sum_x = sum_sq = count = batch_mean
    else:
        count = (weights.sum() * x3.shape[2]).reshape(1) if weights is not None else \
            xp.full((1,), float(x3.shape[0] * x3.shape[2]), dtype=dtype)
        sum_x = _gpu_sums(kernels, x3, weights)
        sum_sq = _gpu_sums(kernels, x3, weights, (sum_x / xp.maximum(count, 1)).reshape(1, -1, 1))
    args = (sum_x, sum_sq, count, run_mean.reshape(-1), run_var.reshape(-1), seen, scale.reshape(-1).astype(dtype),
            mean_used, inv_std, gain, blend, batch_mean) + _doubles(ctx.training, update, use_running, cfg.time_constant,
                                                                 cfg.blend_time_constant, cfg.epsilon, cells) + (np.int64(C),)
    kernels.launch(BN_SOURCE, "statistics", dtype, C, args)
    if update:
        kernels.launch(BN_SOURCE, "count_samples", dtype, 1,
                       (count, seen) + _doubles(cfg.time_constant, cfg.blend_time_constant, cells) + (np.int64(1),))
    return DeviceStatistics(mean_used, inv_std, gain, blend, batch_mean, count, not use_running)


def _gpu_bn_forward(ctx, xs, attrs):
    x, scale, bias, run_mean, run_var = xs[:5]
    cfg = _config(attrs)
    dyn = ctx.dyn[0] if ctx.dyn else 0
    x3 = ctx.xp.ascontiguousarray(_canonical(x, dyn, cfg.spatial))
    seen = _gpu_seen(ctx, xs[5] if len(xs) > 5 else None)
    stats = _gpu_statistics(ctx, x3, dyn, run_mean, run_var, seen, scale, cfg, update=ctx.training)
    apply = ctx.backend.kernels.elementwise("T x, T m, T g, T b", "T y", "y = (x - m) * g + b", "bn_apply")
    y = apply(x3, stats.mean.reshape(1, -1, 1), stats.gain.reshape(1, -1, 1),
              bias.reshape(1, -1, 1).astype(x3.dtype)).reshape(x.shape)
    ctx.saved["batch_norm"] = (y, stats)
    return y


def _gpu_bn_backward(ctx, xs, y, gy, attrs):
    x, scale, bias = xs[:3]
    xp, kernels = ctx.xp, ctx.backend.kernels
    cfg = _config(attrs)
    dyn = ctx.dyn[0] if ctx.dyn else 0
    saved = ctx.saved.get("batch_norm")
    if saved is None or saved[0] is not y:      # not this output's forward: recompute, updating nothing
        saved = (y, _gpu_statistics(ctx, xp.ascontiguousarray(_canonical(x, dyn, cfg.spatial)), dyn, xs[3], xs[4],
                                    _gpu_seen(ctx, xs[5] if len(xs) > 5 else None), scale, cfg, update=False))
    stats: DeviceStatistics = saved[1]
    x3 = xp.ascontiguousarray(_canonical(x, dyn, cfg.spatial))
    g3 = xp.ascontiguousarray(_canonical(gy, dyn, cfg.spatial))
    mean = stats.mean.reshape(1, -1, 1)
    sum_g = _per_channel(kernels.reduction("T g", "T y", "g", "a + b", "y = a", "0", "bn_sum"), g3)
    sum_gc = _per_channel(kernels.reduction("T g, T x, T m", "T y", "g * (x - m)", "a + b", "y = a", "0", "bn_gc"),
                          g3, x3, mean)
    C = x3.shape[1]
    by_var, shift, gscale, gbias = (xp.empty(C, dtype=x3.dtype) for _ in range(4))
    kernels.launch(BN_SOURCE, "backward_terms", x3.dtype, C,
                   (sum_g, sum_gc, stats.count, stats.mean, stats.batch_mean, stats.inv_std, stats.gain, stats.blend,
                    by_var, shift, gscale, gbias, np.float64(stats.batch_used), np.int64(C)))
    weights = _gpu_weights(ctx, dyn, x3.dtype)
    if weights is None:
        weights = xp.ones((1, 1, 1), dtype=x3.dtype)
    dx = kernels.elementwise("T g, T x, T m, T k, T v, T s, T w", "T gx", "gx = g * k - ((x - m) * v + s) * w",
                             "bn_backward")
    gx = dx(g3, x3, mean, stats.gain.reshape(1, -1, 1), by_var.reshape(1, -1, 1), shift.reshape(1, -1, 1), weights)
    return [gx.reshape(x.shape), gscale.reshape(scale.shape).astype(scale.dtype),
            gbias.reshape(bias.shape).astype(bias.dtype)] + [None] * (len(xs) - 3)


# ---- layer normalisation -------------------------------------------------------------------------

def _ln_normalised(ctx, x, attrs):
    xp = ctx.xp
    dyn = ctx.dyn[0] if ctx.dyn else 0
    axes = tuple(range(dyn, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    var = xp.mean(centred * centred, axis=axes, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + number(LAYER_NORM_SIGNATURE, attrs, "epsilon", "LayerNormalization"))
    return centred * inv_std, inv_std, axes


def _ln_forward(ctx, xs, attrs):
    normalised, _, _ = _ln_normalised(ctx, xs[0], attrs)
    y = normalised * xs[1] if len(xs) > 1 else normalised
    return y + xs[2] if len(xs) > 2 else y


def _ln_backward(ctx, xs, y, gy, attrs):
    xp = ctx.xp
    normalised, inv_std, axes = _ln_normalised(ctx, xs[0], attrs)
    g = gy * xs[1] if len(xs) > 1 else gy
    mean_g = g.mean(axis=axes, keepdims=True)
    mean_g_n = xp.mean(g * normalised, axis=axes, keepdims=True)
    grads = [inv_std * (g - mean_g - normalised * mean_g_n)]
    if len(xs) > 1:
        grads.append(unbroadcast(gy * normalised, xs[1].shape))
    if len(xs) > 2:
        grads.append(unbroadcast(gy, xs[2].shape))
    return grads


# ---- registration --------------------------------------------------------------------------------

def _x(shape, dyn=1):
    return InputSpec(tuple(shape), dyn=dyn)


def _p(shape, kind="float", grad=True):
    return InputSpec(tuple(shape), dyn=0, kind=kind, grad=grad, int_high=1)


def _bn_inputs(x_shape, p_shape, dyn=1, count=True, seen=False):
    running = (_p(p_shape, grad=False), _p(p_shape, "positive", grad=False))
    counter = (_p((1,), "positive" if seen else "int", grad=False),) if count else ()
    return (_x(x_shape, dyn), _p(p_shape), _p(p_shape)) + running + counter


BATCH_NORMALIZATION = register(OpDef(
    name="BatchNormalization", arity=(5, 6), shape=_bn_shape, forward=_bn_forward, backward=_bn_backward,
    layout=_static_parameters("BatchNormalization"), stateful=True, signature=BATCH_NORM_SIGNATURE,
    kernels={"cupy": (_gpu_bn_forward, _gpu_bn_backward)},
    doc="batch normalisation with running statistics (spatial, normalizationTimeConstant, blendTimeConstant, "
        "epsilon); training updates runMean/runVariance/runCount in place",
    checks=[
        OpCheck(_bn_inputs((3, 3, 2), (2,)), {"spatial": True}, out=(3, 3, 2)),
        OpCheck(_bn_inputs((3, 2), (3, 2)), {}, out=(3, 2)),                      # per element
        OpCheck(_bn_inputs((3, 3, 2), (2,), seen=True), {"spatial": True}, out=(3, 3, 2), training=False),
        OpCheck(_bn_inputs((3, 2), (3, 2), seen=True), {}, out=(3, 2), training=False),
        OpCheck(_bn_inputs((3, 3, 2), (2, 1)), {"spatial": True, "normalizationTimeConstant": 100},
                out=(3, 3, 2)),                                                     # CNTK's (C:1) parameters
        OpCheck(_bn_inputs((2, 3, 2), (1, 1, 2)), {"spatial": True, "epsilon": 1e-3}, out=(2, 3, 2)),
        OpCheck(_bn_inputs((3, 3, 2), (0, 1)), {"spatial": True}, out=(3, 3, 2)),  # (0:1) inferred as (2:1)
        OpCheck(_bn_inputs((2, 2, 3), (3,), dyn=2), {"spatial": True}, out=(2, 2, 3)),
        OpCheck(_bn_inputs((4,), (4,), count=False), {}, out=(4,)),                # no runCount input
    ],
))

LAYER_NORMALIZATION = register(OpDef(
    name="LayerNormalization", arity=(1, 3), shape=_ln_shape, forward=_ln_forward, backward=_ln_backward,
    layout=_static_parameters("LayerNormalization"), signature=LAYER_NORM_SIGNATURE,
    doc="normalise each sample over all its elements, then scale .* x̂ + bias (epsilon)",
    checks=[
        OpCheck((_x((3, 4)), _p((1,)), _p((1,))), out=(3, 4)),
        OpCheck((_x((2, 3)), _p((2, 3)), _p((2, 3))), {"epsilon": 1e-3}, out=(2, 3)),
        OpCheck((_x((4,), dyn=2), _p((4,)), _p((1,))), out=(4,)),
        OpCheck((_x((2, 3, 2)), _p((2,)), _p((2, 3))), out=(2, 3, 2)),
        OpCheck((_x((5,)),), out=(5,)),
    ],
))
