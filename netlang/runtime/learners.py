"""Learners: the parameter update of one training step, as CNTK's SGD block defines it.

A learner updates a `FlatParameters` in place from its gradient buffer. The gradient is the SUM
over the minibatch's samples (criteria are sums, CNTK semantics) and `mb_samples` is how many
samples that is; learning rates are per sample. One `step(epoch, mb_samples)` does, in CNTK's order
(`SGD::UpdateWeights`):

1. clipping, per parameter, to `clippingThresholdPerSample × mb_samples`: truncation of each
   element when `gradientClippingWithTruncation` (default), else scaling the parameter's gradient
   down to that Frobenius norm (CNTK clips each parameter matrix on its own, not the global norm);
2. L2: `g += L2RegWeight × mb_samples × w` (per sample, so invariant to the minibatch size);
3. the update rule of `gradUpdateType` with `lr = learning rate per sample × learningRateMultiplier`;
4. Gaussian noise `gaussianNoiseInjectStd` added to the parameters;
5. L1 as a proximal step: soft-threshold `w` by `lr × L1RegWeight × mb_samples`.

The update rules (the formulas of CNTK's CPU kernels, μ = momentum for this minibatch):

* `none` (plain SGD, unit-gain momentum): `m = μ·m + (1-μ)·lr·g; w -= m`. The momentum buffer
  holds learning-rate-scaled values, as in CNTK, so a learning-rate change acts at once.
  `useNAG`: `m = μ·m + (1-μ)·lr·g; w -= μ·m + (1-μ)·lr·g`.
* `adagrad`: `a += g²; ĝ = g/√(a+1e-16); w -= lr/k·ĝ` with `k` = mean of `1/√(a+1e-16)` over the
  parameter when `normWithAveMultiplier` (default true), else 1.
* `rmsProp`: per element a step size `s` (first call: 0.02) that grows ×`rms_wgt_inc` (≤
  `rms_wgt_max`) while the gradient's sign repeats and shrinks ×`rms_wgt_dec` (≥ `rms_wgt_min`)
  otherwise; `v = γ·v + (1-γ)·g²` (first call: v = g²); `ĝ = g·s/√(v+1e-6)`; `w -= lr/k·ĝ` with
  `k` = mean of `s/√(v+1e-6)` over the parameter when `normWithAveMultiplier`.
* `fsAdagrad`: ν = exp(-mb/`varianceTimeConstant`); a smoothed sample count `c = ν·c + (1-ν)·mb`;
  `v = ν·v + (1-ν)·g²`; `ĝ = g·min(fsAdagradTargetAvDenom·√c/√v, 10)` (ĝ = g where v = 0);
  if μ > 0: `m = μ·m + (1-μ)·ĝ; ĝ = m`; `w -= lr·ĝ`.
* `adam` (not in CNTK's V1 SGD block; CNTK's V2 `AdamLearner` rule): keys `adamBeta1`,
  `adamBeta2=0.999`, `adamEpsilon=1e-8`, all per minibatch. β1 is the momentum schedule's value
  for the minibatch (so the default `momentumPerMB=0.9` gives the usual β1 = 0.9 and
  `momentumAsTimeConstant` works as everywhere) unless `adamBeta1` is given, which then wins.
  `t += 1; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; w -= lr·√(1-β2^t)/(1-β1^t)·m/(√v + ε)`.
  As in CNTK the step size is the learning rate per sample (the normalised step does not grow
  with the minibatch): `learningRatesPerSample = 0.001` is the textbook Adam step.
* `adadelta` (CNTK V2's rule): keys `rho=0.95`, `epsilon=1e-8`.
  `v = ρ·v + (1-ρ)·g²; Δ = -√(x+ε)/√(v+ε)·g; x = ρ·x + (1-ρ)·Δ²; w += lr·Δ` (lr 1 is usual).

Parameters with learningRateMultiplier 0 are never touched (FlatParameters puts them after the
trainable prefix). A per-parameter regularisation multiplier (CNTK's `regMultiplier`, e.g. for
`disableRegInBatchNormalization`) scales L2 and L1 of that parameter.

`step` consumes the gradient buffer (clipping and L2 are applied to it in place).

On a backend with compiled kernels (the GPU) the same step runs as one fused kernel over the flat
buffers (runtime/gpu/updates.py), with the host scalars each rule forms in `rule_scalars`, shared by
both paths, so the two agree and a checkpoint written by one resumes on the other.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from netlang.compiler.lang.settings import SGDSettings
from netlang.errors import ConfigError
from netlang.runtime.flatbuffer import FlatParameters
from netlang.runtime.gpu.updates import CLIP_NONE, CLIP_NORM, CLIP_TRUNCATE, FusedUpdate, UpdateConfig, hyper_values
from netlang.runtime.schedules import LearningRateSchedule, MomentumSchedule


class Learner:
    """Base of all learners: the common pre- and post-processing around one update rule."""

    name = "none"
    state_names: tuple[str, ...] = ()

    def __init__(self, settings: SGDSettings, params: FlatParameters):
        self.settings = settings
        self.learning_rate = LearningRateSchedule.of(settings)
        self.momentum = MomentumSchedule.of(settings)
        self.params = params
        self.xp = params.xp
        self.steps = 0                      # updates done so far
        self.learning_rate_factor = 1.0     # AutoAdjust scales the scheduled rate by this
        self.state = {name: params.new_buffer() for name in self.state_names}
        self.scalars: dict[str, float] = {}
        self._lr_cache: tuple[float, Any] | None = None
        kernels = getattr(params.backend, "kernels", None)
        self.fused = None if kernels is None else FusedUpdate(self._update_config(), params, kernels,
                                                               params.backend.upload_scalars)

    # ---- what the trainer asks --------------------------------------------------------------

    def learning_rate_per_sample(self, epoch: int) -> float:
        return self.learning_rate.per_sample(epoch) * self.learning_rate_factor

    def momentum_per_minibatch(self, epoch: int, mb_samples: int) -> float:
        return self.momentum.per_minibatch(epoch, mb_samples)

    def step(self, epoch: int, mb_samples: int) -> None:
        """One update of `params.data` from `params.grad` (the sum over `mb_samples` samples)."""
        if mb_samples <= 0:
            raise ValueError(f"an update needs at least one sample, got {mb_samples}")
        n = self.params.num_trainable
        if n > 0 and self.fused is not None:
            self._fused_step(epoch, mb_samples, n)
        elif n > 0:
            w = self.params.data[:n]
            g = self.params.grad[:n]
            s = self.settings
            self._clip(g, mb_samples)
            if s.l2_reg_weight > 0:
                g += self._reg_scaled(s.l2_reg_weight * mb_samples, n) * w
            lr = self._lr_per_element(self.learning_rate_per_sample(epoch), n)
            self.update(w, g, lr, epoch, mb_samples)
            if s.gaussian_noise_inject_std > 0:
                w += self._noise(n)
            if s.l1_reg_weight > 0:
                threshold = lr * self._reg_scaled(s.l1_reg_weight * mb_samples, n)
                w[...] = self.xp.sign(w) * self.xp.maximum(self.xp.abs(w) - threshold, 0)
        self.steps += 1

    def update(self, w, g, lr, epoch: int, mb_samples: int) -> None:
        """The rule itself: update `w` (trainable prefix) from `g`; `lr` is per element or scalar."""
        raise NotImplementedError

    def rule_scalars(self, epoch: int, mb_samples: int) -> dict:
        """The host-side numbers of the rule for this step (advancing its counters), shared by the
        NumPy update and the fused kernel."""
        return {}

    # ---- the fused kernel (GPU) ------------------------------------------------------------

    uses_momentum = False         # the rule reads the momentum schedule

    def _update_config(self) -> UpdateConfig:
        s = self.settings
        clip = CLIP_NONE if math.isinf(s.clipping_threshold_per_sample) else \
            CLIP_TRUNCATE if s.gradient_clipping_with_truncation else CLIP_NORM
        return UpdateConfig(self.name, clip, uniform_lr=self.params.uniform_lr,
                            reg_multiplier=self.params.reg_multiplier is not None, l2=s.l2_reg_weight > 0,
                            l1=s.l1_reg_weight > 0, noise=s.gaussian_noise_inject_std > 0,
                            nesterov=s.use_nesterov, ave_multiplier=s.norm_with_ave_multiplier)

    def _fused_step(self, epoch: int, mb_samples: int, n: int) -> None:
        hyper = self.fused_hyper(epoch, mb_samples)
        noise = self._noise(n) if self.settings.gaussian_noise_inject_std > 0 else None
        self.fused.step([self.state[name] for name in self.state_names], hyper, noise)

    def fused_hyper(self, epoch: int, mb_samples: int):
        """The host half of a fused update: this step's hyper-parameter buffer (advancing the rule's
        counters). A captured step uploads it and replays `apply_fused`."""
        s = self.settings
        mu = self.momentum_per_minibatch(epoch, mb_samples) if self.uses_momentum else 0.0
        limit = 0.0 if math.isinf(s.clipping_threshold_per_sample) else s.clipping_threshold_per_sample * mb_samples
        return hyper_values(self.name, self.learning_rate_per_sample(epoch), mu, limit,
                            s.l2_reg_weight * mb_samples, s.l1_reg_weight * mb_samples,
                            self.rule_scalars(epoch, mb_samples))

    def apply_fused(self, hyper_on_device) -> None:
        """The device half: the update kernels reading `hyper_on_device`."""
        self.fused.launch([self.state[name] for name in self.state_names], hyper_on_device)

    @property
    def capturable(self) -> bool:
        """The update can be part of a captured step: fused, and drawing no noise on the host."""
        return self.fused is not None and self.settings.gaussian_noise_inject_std == 0

    # ---- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to resume exactly, as one flat dict: each state buffer is a numpy
        array under its own name (full buffer layout); every other entry is JSON-able."""
        state = {
            "learner": self.name,
            "layout": list(self.params.layout),
            "steps": int(self.steps),
            "learning_rate_factor": float(self.learning_rate_factor),
            "scalars": {k: float(v) for k, v in self.scalars.items()},
        }
        state.update({k: self.params.backend.to_host(buf).copy() for k, buf in self.state.items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("learner") != self.name:
            raise self.settings.error("gradUpdateType", f"the checkpoint's learner state is for gradUpdateType "
                                      f"'{state.get('learner')}', but the config uses '{self.name}'",
                                      hint="use the gradUpdateType the run was started with, or start "
                                           "afresh without the checkpoint")
        if list(state.get("layout", self.params.layout)) != list(self.params.layout):
            raise ConfigError("the checkpoint's learner state belongs to a network with other "
                              "parameters", hint="the network changed since the checkpoint was "
                                                 "written; start afresh without the checkpoint")
        missing = [name for name in self.state if name not in state]
        if missing:
            raise ConfigError(f"the checkpoint's learner state lacks '{missing[0]}'",
                              hint="the checkpoint is incomplete; start afresh without it")
        buffers = {name: state[name] for name in self.state}
        for name, value in buffers.items():
            if int(np.size(value)) != self.params.size:
                raise ConfigError(f"the checkpoint's learner state '{name}' has {np.size(value)} "
                                  f"elements but the network has {self.params.size} parameters",
                                  hint="the network changed since the checkpoint was written")
        for name, value in buffers.items():
            self.state[name][...] = self.params.backend.from_host(value, self.params.dtype).reshape(-1)
        self.steps = int(state.get("steps", 0))
        self.learning_rate_factor = float(state.get("learning_rate_factor", 1.0))
        self.scalars = {k: float(v) for k, v in state.get("scalars", {}).items()}

    # ---- helpers -------------------------------------------------------------------------

    def _clip(self, g, mb_samples: int) -> None:
        threshold = self.settings.clipping_threshold_per_sample
        if math.isinf(threshold):
            return
        limit = threshold * mb_samples
        if self.settings.gradient_clipping_with_truncation:
            self.xp.clip(g, -limit, limit, out=g)
            return
        norms = self.xp.sqrt(self.params.segment_sum(g * g))
        # limit / max(norm, limit): the factor that brings a larger norm down to the limit, else 1.
        factors = (limit / self.xp.maximum(norms, limit)).astype(g.dtype)
        g *= self.params.expand(factors)

    def _lr_per_element(self, lr: float, n: int):
        if self.params.uniform_lr:
            return lr
        if self._lr_cache is None or self._lr_cache[0] != lr:
            self._lr_cache = (lr, lr * self.params.lr_multiplier[:n])
        return self._lr_cache[1]

    def _reg_scaled(self, weight: float, n: int):
        multiplier = self.params.reg_multiplier
        return weight if multiplier is None else weight * multiplier[:n]

    def _noise(self, n: int):
        # A fresh generator per step, seeded by the step number: a resumed run draws the same noise.
        stream = self.params.backend.random_stream([self.settings.noise_seed, self.steps])
        noise = stream.standard_normal(n, self.params.dtype)
        noise *= self.settings.gaussian_noise_inject_std
        return noise

    def _ave_multiplier(self, per_element):
        """CNTK's `aveMultiplier`: the mean of the per-element scale over each parameter."""
        return self.params.expand(self.params.segment_mean(per_element))


def moving_average(average, decay: float, x, scale=1.0):
    """`average ← decay·average + (1 − decay)·scale·x` in place: the unit-gain exponential average
    every update rule keeps (momentum, squared gradients …). Returns the term added, `(scale·(1 −
    decay))·x`; `scale` (a learning rate, scalar or per element) multiplies before `x` does, as CNTK
    computes it."""
    added = (scale * (1.0 - decay)) * x
    average *= decay
    average += added
    return added


class SGDLearner(Learner):
    """Plain SGD with CNTK's unit-gain momentum, optionally Nesterov (`useNAG`)."""

    name = "none"
    state_names = ("smoothed_gradient",)
    uses_momentum = True

    def update(self, w, g, lr, epoch, mb_samples):
        mu = self.momentum_per_minibatch(epoch, mb_samples)
        m = self.state["smoothed_gradient"][: w.size]
        step = moving_average(m, mu, g, scale=lr)
        if self.settings.use_nesterov:
            w -= mu * m
            w -= step
        else:
            w -= m


class AdaGradLearner(Learner):
    name = "adagrad"
    state_names = ("sum_of_squares",)

    def update(self, w, g, lr, epoch, mb_samples):
        xp = self.xp
        acc = self.state["sum_of_squares"][: w.size]
        acc += g * g
        denom = xp.sqrt(acc + 1e-16)
        g /= denom
        if self.settings.norm_with_ave_multiplier:
            lr = lr / self._ave_multiplier(1.0 / denom)
        w -= lr * g


class RmsPropLearner(Learner):
    name = "rmsprop"
    state_names = ("mean_square", "previous_sign", "step_size")

    def update(self, w, g, lr, epoch, mb_samples):
        xp, s = self.xp, self.settings
        n = w.size
        mean_square = self.state["mean_square"][:n]
        previous_sign = self.state["previous_sign"][:n]
        step_size = self.state["step_size"][:n]
        if self.rule_scalars(epoch, mb_samples)["first"]:
            # CNTK starts the average at the first squared gradient and every step size at 0.02.
            mean_square[...] = g * g
            step_size.fill(0.02)
        moving_average(mean_square, s.rms_gamma, g * g)
        sign = xp.sign(g)
        same_direction = previous_sign * sign > 0
        grown = xp.minimum(step_size * s.rms_wgt_inc, s.rms_wgt_max)
        step_size *= s.rms_wgt_dec
        xp.maximum(step_size, s.rms_wgt_min, out=step_size)
        xp.copyto(step_size, grown, where=same_direction)
        scale = mean_square + 1e-6
        xp.sqrt(scale, out=scale)
        xp.divide(step_size, scale, out=scale)
        g *= scale
        previous_sign[...] = sign
        if s.norm_with_ave_multiplier:
            lr = lr / self._ave_multiplier(scale)
        w -= lr * g

    def rule_scalars(self, epoch, mb_samples):
        s = self.settings
        first = not self.scalars.get("initialized")
        self.scalars["initialized"] = 1.0
        return {"first": first, "gamma": s.rms_gamma, "inc": s.rms_wgt_inc, "dec": s.rms_wgt_dec,
                "max": s.rms_wgt_max, "min": s.rms_wgt_min}


class FSAdaGradLearner(Learner):
    name = "fsadagrad"
    state_names = ("mean_square", "smoothed_gradient")
    uses_momentum = True

    def rule_scalars(self, epoch, mb_samples):
        s = self.settings
        tau = s.variance_time_constant
        nu = 0.0 if tau == 0 else math.exp(-mb_samples / tau)
        count = nu * self.scalars.get("smoothed_count", 0.0) + (1.0 - nu) * mb_samples
        self.scalars["smoothed_count"] = count
        return {"nu": nu, "target": s.fsadagrad_target_av_denom * math.sqrt(count)}

    def update(self, w, g, lr, epoch, mb_samples):
        xp = self.xp
        n = w.size
        mu = self.momentum_per_minibatch(epoch, mb_samples)
        scalars = self.rule_scalars(epoch, mb_samples)
        nu, target = scalars["nu"], scalars["target"]
        mean_square = self.state["mean_square"][:n]
        moving_average(mean_square, nu, g * g)
        nonzero = mean_square != 0
        safe = xp.where(nonzero, mean_square, 1)
        g *= xp.where(nonzero, xp.minimum(target / xp.sqrt(safe), 10.0), 1)
        if mu > 0:
            m = self.state["smoothed_gradient"][:n]
            moving_average(m, mu, g)
            g = m
        w -= lr * g


class AdamLearner(Learner):
    name = "adam"
    state_names = ("mean", "mean_square")

    def rule_scalars(self, epoch, mb_samples):
        s = self.settings
        beta1 = s.adam_beta1 if s.adam_beta1 is not None else \
            self.momentum_per_minibatch(epoch, mb_samples)
        t = self.scalars.get("t", 0.0) + 1.0
        self.scalars["t"] = t
        return {"beta1": beta1, "beta2": s.adam_beta2, "epsilon": s.adam_epsilon,
                "correction": math.sqrt(1.0 - s.adam_beta2 ** t) / (1.0 - beta1 ** t)}

    def update(self, w, g, lr, epoch, mb_samples):
        xp, s = self.xp, self.settings
        n = w.size
        scalars = self.rule_scalars(epoch, mb_samples)
        beta1, beta2, correction = scalars["beta1"], scalars["beta2"], scalars["correction"]
        m = self.state["mean"][:n]
        v = self.state["mean_square"][:n]
        moving_average(m, beta1, g)
        moving_average(v, beta2, g * g)
        w -= (lr * correction) * m / (xp.sqrt(v) + s.adam_epsilon)


class AdaDeltaLearner(Learner):
    name = "adadelta"
    state_names = ("mean_square_gradient", "mean_square_delta")

    def update(self, w, g, lr, epoch, mb_samples):
        xp, s = self.xp, self.settings
        n = w.size
        rho, eps = s.adadelta_rho, s.adadelta_epsilon
        v = self.state["mean_square_gradient"][:n]
        x = self.state["mean_square_delta"][:n]
        moving_average(v, rho, g * g)
        delta = -xp.sqrt(x + eps) / xp.sqrt(v + eps) * g
        moving_average(x, rho, delta * delta)
        w += lr * delta

    def rule_scalars(self, epoch, mb_samples):
        return {"rho": self.settings.adadelta_rho, "epsilon": self.settings.adadelta_epsilon}


LEARNERS: dict[str, type[Learner]] = {
    cls.name: cls for cls in (SGDLearner, AdaGradLearner, RmsPropLearner, FSAdaGradLearner,
                              AdamLearner, AdaDeltaLearner)
}


def create_learner(settings: SGDSettings, params: FlatParameters) -> Learner:
    """The learner for `settings.grad_update_type` (any case, as the schema spells it), bound to `params`."""
    return LEARNERS[settings.grad_update_type.lower()](settings, params)

