"""Registry-driven checks of every primitive op: each OpDef's own `checks` are the test cases.

For every non-leaf op in `registry.all_ops()`:
  * it must have at least one check (an op without checks fails, by name);
  * shape test: the shape rule gives the check's expected output shape, and the forward kernel's
    array has the row-major shape that implies (dynamic axes + reversed sample axes), in float32
    and float64;
  * gradient check (differentiable ops and cases): central finite differences of sum(y * R) for a
    fixed random R against `registry.apply_backward`, in float64.

Kernels are driven only through `registry.apply_forward` / `apply_backward` with a real
`OpContext`, as the executor drives them, on every available backend (the `backend` fixture of
conftest.py: NumPy, and CuPy where a GPU is present): inputs are made on the host and moved to the
device, results are read back for the assertions. Random ops get a freshly seeded generator of the
backend for every forward call, so finite differences see the same dropout mask as the analytic
gradient.

Input kinds (`InputSpec.kind`) are made here as follows:
  float    uniform in [low, high]
  nonzero  uniform magnitude in [0.1, max(|low|, |high|)] with a random sign (away from kinks at 0)
  positive uniform in [low, high] when low > 0, else in [0.5, 2]
  onehot   one 1 per sample, at a random element of the sample
  binary   0 or 1
  int      integers in [0, int_high) (int_high 0 means 3)
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from netlang.ir.shapes import num_elements, to_runtime
from netlang.ops import registry
from netlang.ops.registry import OpContext, ShapeResult

BATCH = 2          # N
STEPS = 3          # T
SEED = 1234

OPS = [op for op in registry.all_ops() if not op.leaf]
CASES = [pytest.param(op, i, id=f"{op.name}-{i}") for op in OPS for i in range(len(op.checks))]
GRAD_CASES = [pytest.param(op, i, id=f"{op.name}-{i}") for op in OPS for i, check in enumerate(op.checks)
              if op.differentiable and op.backward is not None and check.grad]


# ---- making inputs and contexts ----------------------------------------------------------------

def dynamic_sizes(dyn: int) -> tuple:
    return {0: (), 1: (BATCH,), 2: (STEPS, BATCH)}[dyn]


def make_input(spec, shape, dtype, rng):
    """An array for one InputSpec, with BS sample shape `shape` (the spec's, after inference)."""
    full = dynamic_sizes(spec.dyn) + to_runtime(shape)
    kind = spec.kind
    if kind == "float":
        x = rng.uniform(spec.low, spec.high, full)
    elif kind == "nonzero":
        top = max(abs(spec.low), abs(spec.high), 0.2)
        x = rng.uniform(0.1, top, full) * rng.choice([-1.0, 1.0], full)
    elif kind == "positive":
        lo, hi = (spec.low, spec.high) if spec.low > 0 else (0.5, 2.0)
        x = rng.uniform(lo, hi, full)
    elif kind == "onehot":
        per_sample = num_elements(shape)
        lead = dynamic_sizes(spec.dyn)
        flat = np.zeros(lead + (per_sample,))
        hot = rng.integers(0, per_sample, lead)
        np.put_along_axis(flat, np.asarray(hot)[..., None], 1.0, axis=-1)
        x = flat.reshape(full)
    elif kind == "binary":
        x = rng.integers(0, 2, full).astype(float)
    elif kind == "int":
        x = rng.integers(0, spec.int_high or 3, full).astype(float)
    else:
        raise AssertionError(f"unknown InputSpec kind {kind!r}")
    return np.asarray(x, dtype=dtype)


def output_dyn(op, dyns, attrs) -> int:
    if op.layout == "none":
        return 0
    if callable(op.layout):
        return op.layout(dyns, attrs)
    return max(dyns, default=0)


def sequence_mask(dyns):
    """(T, N) mask with the second sequence one step shorter, when any input is a sequence."""
    if 2 not in dyns:
        return None
    mask = np.ones((STEPS, BATCH), dtype=bool)
    mask[STEPS - 1, 1] = False
    return mask


class Case:
    """One check of one op, set up: inferred shapes, host inputs, and a way to run the kernels on
    `backend`."""

    def __init__(self, op, check, dtype, backend, seed=SEED):
        self.op, self.check, self.dtype, self.backend = op, check, dtype, backend
        self.attrs = dict(check.attrs)
        in_shapes = [tuple(s.shape) for s in check.inputs]
        result = op.shape(in_shapes, self.attrs)
        self.infer = result.infer if isinstance(result, ShapeResult) else {}
        self.out_shape = tuple(result.out if isinstance(result, ShapeResult) else result)
        self.in_shapes = [tuple(self.infer.get(i, s)) for i, s in enumerate(in_shapes)]
        rng = np.random.default_rng(seed)
        self.xs = [make_input(spec, shape, dtype, rng) for spec, shape in zip(check.inputs, self.in_shapes)]
        self.dyns = [spec.dyn for spec in check.inputs]
        self.out_dyn = output_dyn(op, self.dyns, self.attrs)
        self.mask = sequence_mask(self.dyns)
        self.state = {}
        self.state = self._precomputed_state()

    def context(self, options=None):
        mask = None if self.mask is None else self.backend.from_host(self.mask)
        return OpContext(backend=self.backend, dyn=list(self.dyns), out_dyn=self.out_dyn,
                         training=self.check.training, rng=self.backend.random_stream(SEED), mask=mask,
                         state=copy.deepcopy(self.state), node_name=f"{self.op.name}_check",
                         options=dict(options or {}))

    def _precomputed_state(self):
        # Statistics ops need their precompute pass (and finalize) before a normal forward.
        if not self.op.precompute:
            return {}
        ctx = self.context({"precompute_pass": True})
        registry.apply_forward(self.op, ctx, self.copies(), self.attrs, len(self.out_shape))
        self.op.finalize(ctx.state, self.backend.xp)
        return ctx.state

    def copies(self, xs=None):
        """Device copies of the (host) inputs: kernels may update inputs in place (batch-norm running
        statistics), so arrays are never shared."""
        return [self.backend.from_host(x.copy()) for x in (self.xs if xs is None else xs)]

    def forward(self, xs=None):
        ctx = self.context()
        y = registry.apply_forward(self.op, ctx, self.copies(xs), self.attrs, len(self.out_shape))
        return ctx, y

    def expected_runtime_shape(self):
        return dynamic_sizes(self.out_dyn) + to_runtime(self.out_shape)


# ---- every op has checks -----------------------------------------------------------------------

@pytest.mark.parametrize("op", [pytest.param(op, id=op.name) for op in OPS])
def test_op_has_checks(op):
    assert op.checks, f"op {op.name} has no checks: give its OpDef at least one OpCheck"


@pytest.mark.parametrize("op", [pytest.param(op, id=op.name) for op in OPS])
def test_op_has_doc_and_forward(op):
    assert op.doc, f"op {op.name} has no doc line"
    assert op.forward is not None, f"op {op.name} has no forward kernel"


# ---- shape test --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("op,index", CASES)
def test_shape_rule_and_forward_agree(op, index, dtype, backend):
    check = op.checks[index]
    case = Case(op, check, dtype, backend)
    if check.out is not None:
        assert case.out_shape == tuple(check.out), f"{op.name}: rule gives {case.out_shape}, check expects {check.out}"
    again = op.shape(case.in_shapes, case.attrs)       # inference must be complete after one round
    assert not (isinstance(again, ShapeResult) and again.infer), f"{op.name}: rule infers again: {again.infer}"
    _, y = case.forward()
    assert y.shape == case.expected_runtime_shape(), (
        f"{op.name}: forward gives {y.shape}, rule implies {case.expected_runtime_shape()}")
    assert y.dtype == dtype, f"{op.name}: forward changed dtype to {y.dtype}"
    assert np.all(np.isfinite(backend.to_host(y))), f"{op.name}: forward produced non-finite values"


# ---- gradient check ----------------------------------------------------------------------------

EPS = 1e-6


def numeric_gradient(case, weights, i):
    """Central differences of sum(y * weights) with respect to every element of input i."""
    xs = case.copies()
    grad = np.zeros(xs[i].shape)              # on the host, whatever backend the inputs live on
    flat, gflat = xs[i].reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        keep = flat[k].item()                  # a number, not a view of the element it restores
        flat[k] = keep + EPS
        up = np.sum(case.backend.to_host(case.forward(xs)[1]) * weights)
        flat[k] = keep - EPS
        down = np.sum(case.backend.to_host(case.forward(xs)[1]) * weights)
        flat[k] = keep
        gflat[k] = (up - down) / (2 * EPS)
    return grad


@pytest.mark.parametrize("op,index", GRAD_CASES)
def test_gradient_matches_finite_differences(op, index, backend):
    check = op.checks[index]
    case = Case(op, check, np.float64, backend)
    ctx, y = case.forward()
    weights = np.random.default_rng(SEED + 1).standard_normal(y.shape)
    grads = registry.apply_backward(op, ctx, case.copies(), y, backend.from_host(weights), case.attrs,
                                    len(case.out_shape))
    grads = [None if g is None else backend.to_host(g) for g in grads]
    assert len(grads) == len(case.xs), f"{op.name}: backward returned {len(grads)} gradients for {len(case.xs)} inputs"
    checked = 0
    for i, spec in enumerate(check.inputs):
        if not spec.grad:
            continue
        assert grads[i] is not None, f"{op.name}: no gradient for input {i}"
        assert grads[i].shape == case.xs[i].shape, f"{op.name}: gradient {i} has shape {grads[i].shape}"
        numeric = numeric_gradient(case, weights, i)
        scale = max(1.0, float(np.max(np.abs(numeric))))
        np.testing.assert_allclose(grads[i], numeric, rtol=check.tol, atol=check.tol * scale,
                                   err_msg=f"{op.name} check {index}: gradient of input {i}")
        checked += 1
    assert checked, f"{op.name} check {index} asks for a gradient check but no input has grad=True"
