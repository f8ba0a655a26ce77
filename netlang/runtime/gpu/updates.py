"""The learners' parameter updates as fused CUDA kernels over the flat buffers.

One update is a handful of launches whatever the number of parameters: one kernel that clips,
regularises, applies the rule, adds noise and soft-thresholds every element of the trainable
prefix; plus, where CNTK's rule needs a per-parameter reduction, one per-segment reduction kernel
before it (clipping by the Frobenius norm) or between two halves of the rule (AdaGrad's and
RmsProp's `normWithAveMultiplier`). The arithmetic is runtime/learners.py's, operation by operation
and in its precision (NumPy rounds a Python scalar to the array's type before it multiplies, and
so do these kernels; they are compiled without fused multiply-add), so the GPU and the CPU agree to
rounding, and to the bit where the order of additions is the same.

What changes between steps — the learning rate, momentum, minibatch-size-scaled L1/L2 weights and
clipping limit, Adam's bias correction — is read by the kernels from a small float64 device
buffer (`HYPER` below), refreshed each step from pinned host memory; no launch argument holds a
per-step value, so a captured CUDA graph can replay the update. What only changes with the
configuration (the rule, clipping kind, which multipliers exist) is compiled into the source.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The per-step values the kernels read, by index into the hyper-parameter buffer.
HYPER = ("lr", "mu", "limit", "l2", "l1", "lr_l1", "lr_one_minus_mu", "one_minus_mu", "lr_correction",
         "a", "one_minus_a", "b", "one_minus_b", "c", "d", "first")

# The rules and their state buffers (runtime/learners.py's state_names, in the same order).
RULES = ("none", "adagrad", "rmsprop", "fsadagrad", "adam", "adadelta")
TWO_PHASE = ("adagrad", "rmsprop")          # with normWithAveMultiplier: rule, segment mean, apply

CLIP_NONE, CLIP_TRUNCATE, CLIP_NORM = 0, 1, 2

_COMMON = r"""
#define H(name) ((T)h[H_##name])
__device__ __forceinline__ T sgn(T x) { return (T)((x > (T)0) - (x < (T)0)); }
"""

_SEGMENTS = r"""
// One block per trainable parameter: the sum over its segment of v (or v*v), reduced in shared memory.
__device__ T segment_total(const T* v, long long start, long long end, int squares) {
    __shared__ T part[256];
    T acc = (T)0;
    for (long long j = start + threadIdx.x; j < end; j += blockDim.x) acc += squares ? v[j] * v[j] : v[j];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    return part[0];
}

// Clipping by norm: factor = limit / max(norm, limit) per parameter (1 where the norm is within).
extern "C" __global__ void clip_factors(const T* g, const long long* starts, T* factor, const double* h,
                                        long long segments) {
    long long s = blockIdx.x;
    T norm = sqrt(segment_total(g, starts[s], starts[s + 1], 1));
    if (threadIdx.x == 0) factor[s] = H(limit) / max(norm, H(limit));
}

// CNTK's aveMultiplier: the mean of v over each parameter.
extern "C" __global__ void segment_means(const T* v, const long long* starts, T* mean, long long segments) {
    long long s = blockIdx.x;
    T total = segment_total(v, starts[s], starts[s + 1], 0);
    if (threadIdx.x == 0) mean[s] = total / (T)(starts[s + 1] - starts[s]);
}
"""

# Gradient preparation shared by every rule (clip, then L2), and the learning rate per element.
_PROLOGUE = r"""
    T wi = w[i];
    T gi = g[i];
#if CLIP == 1
    gi = min(max(gi, -H(limit)), H(limit));
#elif CLIP == 2
    gi = gi * factor[seg_of[i]];
#endif
#if L2
  #if REG_MULTIPLIER
    gi = gi + (H(l2) * regmul[i]) * wi;
  #else
    gi = gi + H(l2) * wi;
  #endif
#endif
#if UNIFORM_LR
    const T lr_i = H(lr);
#else
    const T lr_i = H(lr) * lrmul[i];
#endif
"""

# After the rule: Gaussian noise, then L1 as a soft threshold by lr × L1 weight.
_EPILOGUE = r"""
#if NOISE
    wi = wi + noise[i];
#endif
#if L1
  #if REG_MULTIPLIER
    const T threshold = lr_i * (H(l1) * regmul[i]);
  #elif UNIFORM_LR
    const T threshold = H(lr_l1);
  #else
    const T threshold = lr_i * H(l1);
  #endif
    wi = sgn(wi) * max(fabs(wi) - threshold, (T)0);
#endif
    w[i] = wi;
"""

_SIGNATURE = ("T* w, T* g, T* s0, T* s1, T* s2, T* scratch, const T* lrmul, const T* regmul, const T* noise, "
              "const T* factor, const int* seg_of, const T* seg_mean, const double* h, long long n")

_LOOP = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)"

# The rule bodies: `gi` is the prepared gradient, `wi` the parameter, `lr_i` the learning rate.
_RULES = {
    "none": r"""
  #if UNIFORM_LR
    const T added = H(lr_one_minus_mu) * gi;
  #else
    const T added = (lr_i * H(one_minus_mu)) * gi;
  #endif
    T m = s0[i] * H(mu);
    m = m + added;
    s0[i] = m;
  #if NESTEROV
    wi = wi - H(mu) * m;
    wi = wi - added;
  #else
    wi = wi - m;
  #endif
""",
    "adagrad": r"""
    T acc = s0[i] + gi * gi;
    s0[i] = acc;
    const T denom = sqrt(acc + (T)1e-16);
    gi = gi / denom;
  #if AVE_MULTIPLIER
    scratch[i] = (T)1 / denom;
    g[i] = gi;
    continue;
  #else
    wi = wi - lr_i * gi;
  #endif
""",
    "rmsprop": r"""
    const T gg = gi * gi;
    T ms = s0[i];
    T step = s2[i];
    if (h[H_first] != 0) { ms = gg; step = (T)0.02; }
    ms = ms * H(a);
    ms = ms + H(one_minus_a) * gg;
    s0[i] = ms;
    const T sign = sgn(gi);
    const bool same = s1[i] * sign > (T)0;
    const T grown = min(step * H(b), H(c));
    step = step * H(one_minus_b);
    step = max(step, H(d));
    if (same) step = grown;
    s2[i] = step;
    T scale = sqrt(ms + (T)1e-6);
    scale = step / scale;
    gi = gi * scale;
    s1[i] = sign;
  #if AVE_MULTIPLIER
    scratch[i] = scale;
    g[i] = gi;
    continue;
  #else
    wi = wi - lr_i * gi;
  #endif
""",
    "fsadagrad": r"""
    T ms = s0[i] * H(a);
    ms = ms + H(one_minus_a) * (gi * gi);
    s0[i] = ms;
    if (ms != (T)0) gi = gi * min(H(b) / sqrt(ms), (T)10);
    if (h[H_c] != 0) {
        T m = s1[i] * H(mu);
        m = m + H(one_minus_mu) * gi;
        s1[i] = m;
        gi = m;
    }
    wi = wi - lr_i * gi;
""",
    "adam": r"""
    T m = s0[i] * H(a);
    m = m + H(one_minus_a) * gi;
    s0[i] = m;
    T v = s1[i] * H(b);
    v = v + H(one_minus_b) * (gi * gi);
    s1[i] = v;
  #if UNIFORM_LR
    wi = wi - (H(lr_correction) * m) / (sqrt(v) + H(c));
  #else
    wi = wi - ((lr_i * H(d)) * m) / (sqrt(v) + H(c));
  #endif
""",
    "adadelta": r"""
    T v = s0[i] * H(a);
    v = v + H(one_minus_a) * (gi * gi);
    s0[i] = v;
    const T delta = (-sqrt(s1[i] + H(c))) / sqrt(v + H(c)) * gi;
    T x = s1[i] * H(a);
    x = x + H(one_minus_a) * (delta * delta);
    s1[i] = x;
    wi = wi + lr_i * delta;
""",
}

# The second half of AdaGrad / RmsProp with normWithAveMultiplier: the learning rate divided by
# the parameter's mean multiplier, then the same epilogue.
_APPLY = r"""
    T wi = w[i];
  #if UNIFORM_LR
    const T lr_i = H(lr);
  #else
    const T lr_i = H(lr) * lrmul[i];
  #endif
    wi = wi - (lr_i / seg_mean[seg_of[i]]) * g[i];
"""


@dataclass(frozen=True)
class UpdateConfig:
    """What selects an update kernel's source (everything else is read from the hyper buffer)."""

    rule: str
    clip: int = CLIP_NONE
    uniform_lr: bool = True
    reg_multiplier: bool = False
    l2: bool = False
    l1: bool = False
    noise: bool = False
    nesterov: bool = False
    ave_multiplier: bool = False

    @property
    def two_phase(self) -> bool:
        return self.rule in TWO_PHASE and self.ave_multiplier

    @property
    def needs_segments(self) -> bool:
        return self.clip == CLIP_NORM or self.two_phase


def _defines(config: UpdateConfig) -> str:
    flags = {"CLIP": config.clip, "UNIFORM_LR": config.uniform_lr, "REG_MULTIPLIER": config.reg_multiplier,
             "L2": config.l2, "L1": config.l1, "NOISE": config.noise, "NESTEROV": config.nesterov,
             "AVE_MULTIPLIER": config.ave_multiplier}
    lines = [f"#define {k} {int(v)}" for k, v in flags.items()]
    lines += [f"#define H_{name} {index}" for index, name in enumerate(HYPER)]
    return "\n".join(lines)


def update_source(config: UpdateConfig) -> str:
    """The CUDA source of `config`'s update: kernels `update` (and `apply` for two-phase rules),
    `clip_factors` and `segment_means`."""
    if config.rule not in RULES:
        raise ValueError(f"no fused update for rule '{config.rule}'")
    update = (f'extern "C" __global__ void update({_SIGNATURE}) {{\n  {_LOOP} {{\n'
              f"{_PROLOGUE}{_RULES[config.rule]}{_EPILOGUE}  }}\n}}\n")
    apply = ""
    if config.two_phase:
        apply = (f'extern "C" __global__ void apply({_SIGNATURE}) {{\n  {_LOOP} {{\n'
                 f"{_APPLY}{_EPILOGUE}  }}\n}}\n")
    return f"{_defines(config)}\n{_COMMON}\n{_SEGMENTS}\n{update}{apply}"


def hyper_values(rule: str, lr: float, mu: float, limit: float, l2: float, l1: float, rule_scalars: dict) -> np.ndarray:
    """The float64 hyper buffer for one step: scalars as the NumPy learner forms them (products of
    Python floats are taken in double, as there)."""
    h = dict.fromkeys(HYPER, 0.0)
    h.update(lr=lr, mu=mu, limit=limit, l2=l2, l1=l1, lr_l1=lr * l1, lr_one_minus_mu=lr * (1.0 - mu),
             one_minus_mu=1.0 - mu)
    if rule == "rmsprop":
        h.update(a=rule_scalars["gamma"], one_minus_a=1.0 * (1.0 - rule_scalars["gamma"]), b=rule_scalars["inc"],
                 one_minus_b=rule_scalars["dec"], c=rule_scalars["max"], d=rule_scalars["min"],
                 first=float(rule_scalars["first"]))
    elif rule == "fsadagrad":
        h.update(a=rule_scalars["nu"], one_minus_a=1.0 * (1.0 - rule_scalars["nu"]), b=rule_scalars["target"],
                 c=float(mu > 0))
    elif rule == "adam":
        beta1, beta2, correction = rule_scalars["beta1"], rule_scalars["beta2"], rule_scalars["correction"]
        h.update(a=beta1, one_minus_a=1.0 * (1.0 - beta1), b=beta2, one_minus_b=1.0 * (1.0 - beta2),
                 c=rule_scalars["epsilon"], d=correction, lr_correction=lr * correction)
    elif rule == "adadelta":
        h.update(a=rule_scalars["rho"], one_minus_a=1.0 * (1.0 - rule_scalars["rho"]), c=rule_scalars["epsilon"])
    return np.array([h[name] for name in HYPER], dtype=np.float64)


class FusedUpdate:
    """Runs one learner's update through the backend's kernel cache.

    `kernels` is a KernelCache (or anything with its launch interface), `upload` turns the host
    hyper buffer into a device buffer (the CuPy backend stages it through pinned memory).
    """

    def __init__(self, config: UpdateConfig, params, kernels, upload):
        self.config = config
        self.params = params
        self.kernels = kernels
        self.upload = upload
        self.source = update_source(config)
        xp, n = params.xp, params.num_trainable
        dtype = params.dtype
        self._dummy = xp.zeros(1, dtype=dtype)
        self._segments = None
        if config.needs_segments:
            sizes = [int(np.prod(params.shape(name))) for name in params.trainable_names]
            starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            self._starts = params.backend.from_host(starts)
            self._seg_of = params.backend.from_host(np.repeat(np.arange(len(sizes), dtype=np.int32), sizes))
            self._per_segment = xp.zeros(len(sizes), dtype=dtype)
            self._segments = len(sizes)
        self._scratch = xp.zeros(n, dtype=dtype) if config.two_phase else self._dummy
        self._seg_int = self._seg_of if self._segments else xp.zeros(1, dtype=np.int32)

    def step(self, state: list, hyper: np.ndarray, noise=None) -> None:
        """Update the trainable prefix of `params.data` from `params.grad` (consumed)."""
        self.launch(state, self.upload(hyper), noise)

    def launch(self, state: list, h, noise=None) -> None:
        """The update's kernels, reading this step's hyper-parameters from the device buffer `h`
        (what a captured step replays: `h` is refilled before each replay)."""
        p, k, dtype = self.params, self.kernels, self.params.dtype
        n = p.num_trainable
        if n == 0:
            return
        buffers = [s[:n] for s in state] + [self._dummy] * (3 - len(state))
        lrmul = self._dummy if self.config.uniform_lr else p.lr_multiplier[:n]
        regmul = p.reg_multiplier[:n] if self.config.reg_multiplier else self._dummy
        per_segment = self._per_segment if self._segments else self._dummy
        if self.config.clip == CLIP_NORM:
            k.launch_blocks(self.source, "clip_factors", dtype, self._segments,
                            (p.grad, self._starts, per_segment, h, np.int64(self._segments)))
        args = (p.data, p.grad, *buffers, self._scratch, lrmul, regmul, self._dummy if noise is None else noise,
                per_segment, self._seg_int, per_segment, h, np.int64(n))
        k.launch(self.source, "update", dtype, n, args)
        if self.config.two_phase:
            k.launch_blocks(self.source, "segment_means", dtype, self._segments,
                            (self._scratch, self._starts, per_segment, np.int64(self._segments)))
            k.launch(self.source, "apply", dtype, n, args)
