"""Flat parameter buffers and learners, checked against plain per-parameter NumPy references.

The learners run on every available backend (the `backend` fixture of conftest.py); the references
are plain NumPy on the host, and the learners' buffers are read back to compare.
"""
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import settings_of

from netlang.errors import ConfigError, NetworkError, SchemaError
from netlang.runtime.flatbuffer import FlatParameters
from netlang.runtime.learners import create_learner

DTYPES = [np.float32, np.float64]

# ---- FlatParameters ----------------------------------------------------------------------------


def test_views_are_shaped_windows_into_the_one_buffer():
    p = FlatParameters({"W": (3, 4), "b": (4,)})
    p.view("W")[1, 2] = 7.0
    p.grad_view("b")[3] = 5.0
    assert p.data[p.offset("W") + 1 * 4 + 2] == 7.0        # row-major
    assert p.grad[p.offset("b") + 3] == 5.0
    assert p.view("W").shape == (3, 4) and p.size == 16


@pytest.mark.parametrize("dtype", DTYPES)
def test_buffers_have_the_requested_dtype(dtype):
    p = FlatParameters({"W": (2, 2)}, dtype=dtype)
    assert p.data.dtype == dtype and p.grad.dtype == dtype and p.new_buffer().dtype == dtype


def test_frozen_parameters_are_laid_out_after_trainable_ones():
    p = FlatParameters({"a": (2,), "frozen": (3,), "c": (4,)}, lr_multipliers={"frozen": 0})
    assert p.names == ("a", "frozen", "c")
    assert p.num_trainable == 6 and p.offset("frozen") == 6
    assert p.offset("c") == 2


def test_lr_multiplier_buffer_holds_each_parameters_multiplier():
    p = FlatParameters({"a": (2,), "b": (3,)}, lr_multipliers={"b": 0.5})
    assert p.view_of(p.lr_multiplier, "a").tolist() == [1, 1]
    assert p.view_of(p.lr_multiplier, "b").tolist() == [0.5, 0.5, 0.5]
    assert not p.uniform_lr


def test_copy_from_and_to_dict_round_trip():
    p = FlatParameters({"W": (2, 3), "b": (3,)}, dtype=np.float64)
    values = {"W": np.arange(6.0).reshape(2, 3), "b": np.array([1.0, 2.0, 3.0])}
    p.copy_from(values)
    out = p.to_dict()
    assert np.array_equal(out["W"], values["W"]) and np.array_equal(out["b"], values["b"])
    out["b"][0] = 99                                       # a copy, not a view
    assert p.view("b")[0] == 1.0


def test_copy_from_with_wrong_shape_names_the_parameter():
    p = FlatParameters({"W": (2, 3)})
    with pytest.raises(NetworkError, match="'W'"):
        p.copy_from({"W": np.zeros((3, 2))})


def test_copy_from_with_unknown_name_suggests_the_close_one():
    p = FlatParameters({"conv1.W": (2,)})
    with pytest.raises(NetworkError) as info:
        p.copy_from({"conv1.w": np.zeros(2)})
    assert "conv1.W" in info.value.hint


def test_segment_sum_adds_within_each_trainable_parameter():
    p = FlatParameters({"a": (2,), "b": (3,)})
    assert p.segment_sum(np.arange(5.0, dtype=np.float32)).tolist() == [1.0, 9.0]


def test_negative_lr_multiplier_is_rejected():
    with pytest.raises(NetworkError, match="learningRateMultiplier"):
        FlatParameters({"a": (2,)}, lr_multipliers={"a": -1})


# ---- references: CNTK's rules written plainly, one parameter at a time --------------------------

SHAPES = {"W": (3, 4), "b": (4,), "E": (2, 3)}
LR_MULT = {"E": 0.5}
MB = 8                   # nominal minibatch size
LR_PER_MB = "0.4*1:0.2"  # per sample: 0.05 in epoch 1, 0.025 after
TAU = 40.0               # momentum time constant, samples
EPOCHS = [1, 1, 2]       # three steps, the last one in epoch 2
SAMPLES = [8, 8, 5]      # the last minibatch is short


def reference_lr(epoch, name):
    per_mb = 0.4 if epoch == 1 else 0.2
    return per_mb / MB * LR_MULT.get(name, 1.0)


def reference_momentum(mb_samples):
    return math.exp(-mb_samples / TAU)


def reference_clip(g, mb_samples, cfg):
    limit = cfg["clip"] * mb_samples
    if cfg["truncate"]:
        return np.clip(g, -limit, limit)
    norm = math.sqrt(float(np.sum(g * g)))
    return g * (limit / norm) if norm > limit else g


def soft_threshold(w, t):
    out = w.copy()
    out[w > t] -= t
    out[w < -t] += t
    out[np.abs(w) <= t] = 0.0
    return out


class ReferenceSGD:
    def __init__(self, nesterov=False):
        self.nesterov = nesterov
        self.m = {}

    def __call__(self, name, w, g, lr, mu, mb):
        m = self.m.get(name, np.zeros_like(w))
        m = mu * m + lr * (1 - mu) * g
        self.m[name] = m
        if self.nesterov:
            return w - mu * m - lr * (1 - mu) * g
        return w - m


class ReferenceAdaGrad:
    def __init__(self):
        self.acc = {}

    def __call__(self, name, w, g, lr, mu, mb):
        acc = self.acc.get(name, np.zeros_like(w)) + g * g
        self.acc[name] = acc
        root = np.sqrt(acc + 1e-16)
        ave = np.mean(1 / root)
        return w - lr / ave * (g / root)


class ReferenceRmsProp:
    gamma, inc, dec, wmax, wmin = 0.9, 1.5, 0.5, 0.02, 0.005   # both clamps act in 3 steps

    def __init__(self):
        self.avg, self.sign, self.step = {}, {}, {}

    def __call__(self, name, w, g, lr, mu, mb):
        if name not in self.avg:
            self.avg[name] = g * g
            self.sign[name] = np.zeros_like(w)
            self.step[name] = np.full_like(w, 0.02)
        avg = self.gamma * self.avg[name] + (1 - self.gamma) * g * g
        step = self.step[name].copy()
        new_sign = np.sign(g)
        for i in np.ndindex(w.shape):
            if self.sign[name][i] * new_sign[i] > 0:
                step[i] = min(step[i] * self.inc, self.wmax)
            else:
                step[i] = max(step[i] * self.dec, self.wmin)
        scale = step / np.sqrt(avg + 1e-6)
        self.avg[name], self.sign[name], self.step[name] = avg, new_sign, step
        return w - lr / np.mean(scale) * (g * scale)


class ReferenceFSAdaGrad:
    time_constant, target = 100.0, 2.0

    def __init__(self):
        self.var, self.mom, self.count = {}, {}, {}

    def __call__(self, name, w, g, lr, mu, mb):
        nu = math.exp(-mb / self.time_constant)
        count = nu * self.count.get(name, 0.0) + (1 - nu) * mb
        var = nu * self.var.get(name, np.zeros_like(w)) + (1 - nu) * g * g
        self.count[name], self.var[name] = count, var
        weight = np.minimum(self.target * math.sqrt(count) / np.sqrt(var), 10.0)
        g = g * weight
        mom = mu * self.mom.get(name, np.zeros_like(w)) + (1 - mu) * g
        self.mom[name] = mom
        return w - lr * mom


class ReferenceAdam:
    beta2, eps = 0.99, 1e-6

    def __init__(self, beta1=None):
        self.beta1 = beta1
        self.m, self.v, self.t = {}, {}, {}

    def __call__(self, name, w, g, lr, mu, mb):
        b1 = mu if self.beta1 is None else self.beta1
        t = self.t.get(name, 0) + 1
        m = b1 * self.m.get(name, np.zeros_like(w)) + (1 - b1) * g
        v = self.beta2 * self.v.get(name, np.zeros_like(w)) + (1 - self.beta2) * g * g
        self.m[name], self.v[name], self.t[name] = m, v, t
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - self.beta2 ** t)
        # CNTK's epsilon sits next to the uncorrected sqrt(v).
        return w - lr * m_hat / (np.sqrt(v_hat) + self.eps / math.sqrt(1 - self.beta2 ** t))


class ReferenceAdaDelta:
    rho, eps = 0.9, 1e-4

    def __init__(self):
        self.v, self.x = {}, {}

    def __call__(self, name, w, g, lr, mu, mb):
        v = self.rho * self.v.get(name, np.zeros_like(w)) + (1 - self.rho) * g * g
        x = self.x.get(name, np.zeros_like(w))
        delta = -np.sqrt(x + self.eps) / np.sqrt(v + self.eps) * g
        self.v[name] = v
        self.x[name] = self.rho * x + (1 - self.rho) * delta * delta
        return w + lr * delta


def make_problem(seed=0):
    rng = np.random.default_rng(seed)
    init = {n: rng.normal(size=s) for n, s in SHAPES.items()}
    grads = [{n: rng.normal(scale=1.0, size=s) for n, s in SHAPES.items()} for _ in EPOCHS]
    return init, grads


def run_reference(rule, cfg, dtype):
    init, grads = make_problem()
    w = {n: v.astype(dtype).astype(np.float64) for n, v in init.items()}
    for epoch, mb, grad in zip(EPOCHS, SAMPLES, grads):
        mu = reference_momentum(mb)
        for name in SHAPES:
            lr = reference_lr(epoch, name)
            g = reference_clip(grad[name].astype(dtype).astype(np.float64), mb, cfg)
            g = g + cfg["l2"] * mb * w[name]
            new = rule(name, w[name], g, lr, mu, mb)
            w[name] = soft_threshold(new, lr * cfg["l1"] * mb)
    return w


def make_settings(cfg, **extra):
    sgd = settings_of.sgd(f"minibatchSize = {MB} ; learningRatesPerMB = {LR_PER_MB} ; momentumAsTimeConstant = {TAU}\n"
                          f"L2RegWeight = {cfg['l2']} ; L1RegWeight = {cfg['l1']}\n"
                          f"clippingThresholdPerSample = {cfg['clip']}\n"
                          f"gradientClippingWithTruncation = {str(cfg['truncate']).lower()}")
    return replace(sgd, **extra)


def run_learner(settings, dtype, backend, steps=None):
    init, grads = make_problem()
    params = FlatParameters(SHAPES, backend=backend, dtype=dtype, lr_multipliers=LR_MULT)
    params.copy_from(init)
    learner = create_learner(settings, params)
    for epoch, mb, grad in list(zip(EPOCHS, SAMPLES, grads))[:steps]:
        for name, g in grad.items():
            params.grad_view(name)[...] = backend.from_host(g)
        learner.step(epoch, mb)
    return params, learner


def host(params, buffer):
    return params.backend.to_host(buffer)


def assert_matches_reference(params, expected, dtype):
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)
    for name in SHAPES:
        assert params.view(name).dtype == dtype
        np.testing.assert_allclose(host(params, params.view(name)), expected[name], **tol, err_msg=name)


TRUNCATE = dict(l2=0.01, l1=0.002, clip=0.15, truncate=True)
NORM = dict(l2=0.01, l1=0.002, clip=0.15, truncate=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_with_unit_gain_momentum_matches_reference(dtype, backend):
    params, _ = run_learner(make_settings(TRUNCATE), dtype, backend)
    assert_matches_reference(params, run_reference(ReferenceSGD(), TRUNCATE, dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_with_norm_clipping_matches_reference(dtype, backend):
    params, _ = run_learner(make_settings(NORM), dtype, backend)
    assert_matches_reference(params, run_reference(ReferenceSGD(), NORM, dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nesterov_momentum_matches_reference(dtype, backend):
    params, _ = run_learner(make_settings(TRUNCATE, use_nesterov=True), dtype, backend)
    expected = run_reference(ReferenceSGD(nesterov=True), TRUNCATE, dtype)
    assert_matches_reference(params, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adagrad_matches_reference(dtype, backend):
    params, _ = run_learner(make_settings(NORM, grad_update_type="adagrad"), dtype, backend)
    assert_matches_reference(params, run_reference(ReferenceAdaGrad(), NORM, dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsprop_matches_reference(dtype, backend):
    r = ReferenceRmsProp
    settings = make_settings(TRUNCATE, grad_update_type="rmsProp", rms_gamma=r.gamma,
                             rms_wgt_inc=r.inc, rms_wgt_dec=r.dec, rms_wgt_max=r.wmax,
                             rms_wgt_min=r.wmin)
    params, _ = run_learner(settings, dtype, backend)
    assert_matches_reference(params, run_reference(ReferenceRmsProp(), TRUNCATE, dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fsadagrad_matches_reference(dtype, backend):
    r = ReferenceFSAdaGrad
    settings = make_settings(NORM, grad_update_type="fsAdagrad",
                             variance_time_constant=r.time_constant,
                             fsadagrad_target_av_denom=r.target)
    params, _ = run_learner(settings, dtype, backend)
    assert_matches_reference(params, run_reference(ReferenceFSAdaGrad(), NORM, dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beta1", [None, 0.5])
def test_adam_matches_reference(dtype, beta1, backend):
    r = ReferenceAdam
    settings = make_settings(TRUNCATE, grad_update_type="adam", adam_beta1=beta1,
                             adam_beta2=r.beta2, adam_epsilon=r.eps)
    params, _ = run_learner(settings, dtype, backend)
    expected = run_reference(ReferenceAdam(beta1), TRUNCATE, dtype)
    assert_matches_reference(params, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adadelta_matches_reference(dtype, backend):
    r = ReferenceAdaDelta
    settings = make_settings(NORM, grad_update_type="adadelta", adadelta_rho=r.rho,
                             adadelta_epsilon=r.eps)
    params, _ = run_learner(settings, dtype, backend)
    assert_matches_reference(params, run_reference(ReferenceAdaDelta(), NORM, dtype), dtype)


# ---- single behaviours, numbers worked out by hand -------------------------------------------------


def one_parameter(values, backend, lr_per_sample=1.0, dtype=np.float64, momentum="momentumPerSample = 0",
                  **settings):
    params = FlatParameters({"w": (len(values),)}, backend=backend, dtype=dtype)
    params.copy_from({"w": np.array(values, dtype=np.float64)})
    sgd = settings_of.sgd(f"minibatchSize = 1 ; learningRatesPerSample = {lr_per_sample} ; {momentum}")
    return params, create_learner(replace(sgd, **settings), params)


def step_with(params, learner, grad, mb_samples=1, epoch=1):
    params.grad_view("w")[...] = params.backend.from_host(np.asarray(grad, dtype=params.dtype))
    learner.step(epoch, mb_samples)
    return host(params, params.view("w")).tolist()


def test_unit_gain_momentum_accumulates_one_minus_mu_of_each_gradient(backend):
    params, learner = one_parameter([0.0], backend, momentum="momentumPerMB = 0.5")
    assert step_with(params, learner, [1.0]) == [-0.5]          # m = 0.5·1
    assert step_with(params, learner, [1.0]) == [-1.25]         # m = 0.5·0.5 + 0.5·1 = 0.75


def test_truncation_clips_each_element_to_threshold_times_samples(backend):
    params, learner = one_parameter([0.0, 0.0], backend, clipping_threshold_per_sample=0.5)
    # limit = 0.5 per sample × 2 samples = 1
    assert step_with(params, learner, [3.0, -0.25], mb_samples=2) == [-1.0, 0.25]


def test_norm_clipping_scales_the_parameter_gradient_to_the_limit(backend):
    params, learner = one_parameter([0.0, 0.0], backend, clipping_threshold_per_sample=1.0,
                                    gradient_clipping_with_truncation=False)
    # |(3, 4)| = 5 > limit 1  ->  (0.6, 0.8)
    assert step_with(params, learner, [3.0, 4.0]) == pytest.approx([-0.6, -0.8])


def test_norm_clipping_is_per_parameter(backend):
    params = FlatParameters({"a": (2,), "b": (1,)}, backend=backend, dtype=np.float64)
    settings = settings_of.sgd("learningRatesPerSample = 1 ; minibatchSize = 1 ; momentumPerSample = 0\n"
                               "clippingThresholdPerSample = 1 ; gradientClippingWithTruncation = false")
    learner = create_learner(settings, params)
    params.grad[...] = backend.from_host(np.array([3.0, 4.0, 0.5]))
    learner.step(1, 1)
    assert host(params, params.data).tolist() == pytest.approx([-0.6, -0.8, -0.5])   # b is under the limit


def test_l2_is_per_sample_and_scales_with_minibatch_size(backend):
    # g += L2 · mb · w = 0.01 · 4 · 2 = 0.08; w -= 0.1 · 0.08
    params, learner = one_parameter([2.0], backend, lr_per_sample=0.1, l2_reg_weight=0.01)
    assert step_with(params, learner, [0.0], mb_samples=4) == pytest.approx([2.0 - 0.008])


def test_l1_is_a_soft_threshold_of_lr_times_weight_times_samples(backend):
    # threshold = 0.1 · 0.5 · 2 = 0.1
    params, learner = one_parameter([0.25, -0.05, -0.3], backend, lr_per_sample=0.1, l1_reg_weight=0.5)
    assert step_with(params, learner, [0.0, 0.0, 0.0], mb_samples=2) == \
        pytest.approx([0.15, 0.0, -0.2])


def test_reg_multiplier_zero_exempts_a_parameter_from_l2(backend):
    params = FlatParameters({"a": (1,), "bn": (1,)}, backend=backend, dtype=np.float64, reg_multipliers={"bn": 0})
    params.copy_from({"a": np.array([2.0]), "bn": np.array([2.0])})
    settings = settings_of.sgd("learningRatesPerSample = 0.1 ; minibatchSize = 1 ; momentumPerSample = 0\n"
                               "L2RegWeight = 0.5")
    create_learner(settings, params).step(1, 1)
    values = params.to_dict()
    assert values["a"].tolist() == pytest.approx([1.9]) and values["bn"].tolist() == [2.0]

def test_lr_multiplier_scales_the_step_of_its_parameter(backend):
    params = FlatParameters({"a": (1,), "b": (1,)}, backend=backend, dtype=np.float64, lr_multipliers={"b": 0.25})
    settings = settings_of.sgd("learningRatesPerSample = 1 ; minibatchSize = 1 ; momentumPerSample = 0")
    learner = create_learner(settings, params)
    params.grad[...] = 2.0
    learner.step(1, 1)
    values = params.to_dict()
    assert values["a"].tolist() == [-2.0] and values["b"].tolist() == [-0.5]


@pytest.mark.parametrize("update", ["none", "adagrad", "rmsProp", "fsAdagrad", "adam",
                                    "adadelta"])
def test_multiplier_zero_freezes_the_parameter_completely(update, backend):
    params = FlatParameters({"a": (3,), "frozen": (2,)}, backend=backend, dtype=np.float32,
                            lr_multipliers={"frozen": 0.0})
    params.copy_from({"a": np.ones(3), "frozen": np.array([0.5, -0.5])})
    settings = make_settings(dict(l2=0.1, l1=0.01, clip=0.5, truncate=False),
                             grad_update_type=update, gaussian_noise_inject_std=0.1)
    learner = create_learner(settings, params)
    for _ in range(3):
        params.grad[...] = 1.0
        learner.step(1, MB)
    values = params.to_dict()
    assert values["frozen"].tolist() == [0.5, -0.5]
    assert not np.allclose(values["a"], 1.0)
    assert all(np.all(host(params, learner.params.view_of(buf, "frozen")) == 0) for buf in learner.state.values())


@pytest.mark.parametrize("update", ["none", "adagrad", "rmsProp", "fsAdagrad", "adam",
                                    "adadelta"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_state_dict_round_trip_continues_bitwise_identically(update, dtype, backend):
    settings = make_settings(TRUNCATE, grad_update_type=update, use_nesterov=True,
                             gaussian_noise_inject_std=0.01)
    whole, _ = run_learner(settings, dtype, backend)

    first, learner = run_learner(settings, dtype, backend, steps=2)
    saved_values, saved_state = first.to_dict(), learner.state_dict()
    _, grads = make_problem()
    resumed = FlatParameters(SHAPES, backend=backend, dtype=dtype, lr_multipliers=LR_MULT)
    resumed.copy_from(saved_values)
    again = create_learner(settings, resumed)
    again.load_state_dict(saved_state)
    for name, g in grads[2].items():
        resumed.grad_view(name)[...] = backend.from_host(g)
    again.step(EPOCHS[2], SAMPLES[2])
    assert np.array_equal(host(resumed, resumed.data), host(whole, whole.data))


def test_state_dict_holds_only_plain_arrays_and_scalars(backend):
    _, learner = run_learner(make_settings(TRUNCATE, grad_update_type="fsAdagrad"),
                             np.float32, backend, steps=1)
    state = learner.state_dict()
    assert sorted(k for k, v in state.items() if type(v) is np.ndarray) == \
        ["mean_square", "smoothed_gradient"]
    assert all(type(v) is float for v in state["scalars"].values())
    assert type(state["steps"]) is int and state["steps"] == 1
    json.dumps({k: v for k, v in state.items() if type(v) is not np.ndarray})


def test_loading_state_of_another_learner_is_a_config_error(backend):
    _, adam = run_learner(make_settings(TRUNCATE, grad_update_type="adam"), np.float32, backend, steps=1)
    _, sgd = run_learner(make_settings(TRUNCATE), np.float32, backend, steps=1)
    with pytest.raises(ConfigError, match="adam"):
        sgd.load_state_dict(adam.state_dict())


def test_loading_state_of_a_different_network_is_a_config_error(backend):
    _, learner = run_learner(make_settings(TRUNCATE), np.float32, backend, steps=1)
    other = FlatParameters({"W": (3, 4), "b": (4,), "F": (2, 3)}, backend=backend, dtype=np.float32,
                           lr_multipliers={"F": 0.5})
    with pytest.raises(ConfigError, match="other parameters"):
        create_learner(make_settings(TRUNCATE), other).load_state_dict(learner.state_dict())


def test_learning_rate_factor_scales_the_scheduled_rate(backend):
    params, learner = one_parameter([0.0], backend, lr_per_sample=0.5)
    learner.learning_rate_factor = 0.5
    assert step_with(params, learner, [1.0]) == [-0.25]


# ---- settings from the SGD block ---------------------------------------------------------------


def test_settings_from_the_sgd_block_convert_rates_and_momentum():
    s = settings_of.sgd('minibatchSize = 100 ; learningRatesPerMB = "0.1*2:0.05" ; momentumAsTimeConstant = 1000\n'
                        'l2regweight = 0.001 ; clippingThresholdPerSample = "1#INF" ; useNAG = "true"')
    learner = create_learner(s, FlatParameters({"w": (1,)}))
    assert learner.learning_rate.per_sample(3) == pytest.approx(0.0005)
    assert learner.momentum.per_minibatch(1, 100) == pytest.approx(math.exp(-0.1))
    assert s.l2_reg_weight == 0.001 and math.isinf(s.clipping_threshold_per_sample)
    assert s.use_nesterov is True


def test_grad_update_type_is_case_insensitive_with_legacy_names():
    params = FlatParameters({"w": (1,)})
    assert [create_learner(settings_of.sgd(f'gradUpdateType = "{t}"'), params).name
            for t in ("rmsProp", "FSADAGRAD", "", "normal")] == ["rmsprop", "fsadagrad", "none", "none"]


def test_unknown_grad_update_type_suggests_a_name():
    with pytest.raises(SchemaError) as info:
        settings_of.sgd('learningRatesPerSample = 0.1 ; gradUpdateType = "rmsprp"')
    assert "rmsProp" in info.value.hint


def test_legacy_use_adagrad_selects_adagrad():
    s = settings_of.sgd("learningRatesPerSample = 0.1 ; useAdagrad = true")
    assert s.grad_update_type == "adagrad"


def test_negative_l2_weight_is_rejected():
    with pytest.raises(SchemaError, match="L2RegWeight"):
        settings_of.sgd("learningRatesPerSample = 0.1 ; L2RegWeight = -1")
