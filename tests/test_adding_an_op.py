"""Adding an op is one place: its OpDef.

This module defines two throwaway ops — an elementwise one and one that needs whole sequences —
registers them for its tests only, and uses them in networks through
`new ComputationNode [ operation = … ]`, with no other change anywhere: shape inference, frame
mode or the time axis, recurrent loops, the executor and autodiff all take what they need from the
OpDef's rules and flags.
"""
from __future__ import annotations

import numpy as np
import pytest

from netlang.api import load_text
from netlang.errors import NetlangError
from netlang.ir.graph import BATCH, SeqAxis
from netlang.ops import registry
from netlang.ops.registry import InputSpec, OpCheck, OpDef

# ---- the elementwise op: y = x³ + x ------------------------------------------------------------


def _cube_plus_forward(ctx, xs, attrs):
    x = xs[0]
    return x * x * x + x


def _cube_plus_backward(ctx, xs, y, gy, attrs):
    x = xs[0]
    return [gy * (3 * x * x + 1)]


CUBE_PLUS = OpDef(
    name="TestCubePlus", arity=(1, 1), shape=lambda shapes, attrs: tuple(shapes[0]),
    forward=_cube_plus_forward, backward=_cube_plus_backward, elementwise=True,
    doc="x³ + x (a test's throwaway op)", checks=[OpCheck((InputSpec((3,), 1),), out=(3,))])


# ---- the whole-sequence op: the running sum of each sequence -----------------------------------

def _steps(ctx, x):
    """The (T, N, 1, …) flags of the real steps."""
    mask = ctx.mask if ctx.mask is not None else ctx.xp.ones(x.shape[:2], dtype=bool)
    return mask.reshape(mask.shape + (1,) * (x.ndim - 2))


def _running_sum_forward(ctx, xs, attrs):
    x = xs[0]
    real = _steps(ctx, x)
    return ctx.xp.where(real, ctx.xp.cumsum(ctx.xp.where(real, x, 0), axis=0), 0)


def _running_sum_backward(ctx, xs, y, gy, attrs):
    real = _steps(ctx, xs[0])
    read = ctx.xp.where(real, gy, 0)
    # Step t is read by every step from t on: the reversed running sum of the gradients.
    return [ctx.xp.where(real, ctx.xp.cumsum(read[::-1], axis=0)[::-1], 0)]


RUNNING_SUM = OpDef(
    name="TestRunningSum", arity=(1, 1), shape=lambda shapes, attrs: tuple(shapes[0]),
    forward=_running_sum_forward, backward=_running_sum_backward, whole_sequence=True,
    doc="the sum of each sequence's steps up to t (a test's throwaway op)",
    checks=[OpCheck((InputSpec((2,), 2),), out=(2,))])


@pytest.fixture(autouse=True)
def throwaway_ops():
    for op in (CUBE_PLUS, RUNNING_SUM):
        registry.register(op)
    yield
    for op in (CUBE_PLUS, RUNNING_SUM):
        registry.unregister(op.name)


NETWORK = """
    x = Input {3}
    t = Input {2}
    c = new ComputationNode [ operation = 'TestCubePlus' ; inputs = x ]
    s = new ComputationNode [ operation = 'TestRunningSum' ; inputs = c ]
    W = ParameterTensor {(2:3), init='uniform', initValueScale=0.5}
    z = Times (W, s)
    loss = SquareError (t, z)
    criterionNodes = (loss) ; outputNodes = (z)
"""


def padded_batch(seed=0):
    """Three sequences of lengths 4, 2, 3 padded to (T=4, N=3), with their mask."""
    rng = np.random.default_rng(seed)
    mask = np.arange(4)[:, None] < np.array([4, 2, 3])[None, :]
    x = rng.uniform(-0.8, 0.8, (4, 3, 3)) * mask[..., None]
    t = rng.uniform(-1, 1, (4, 3, 2)) * mask[..., None]
    return {"x": (x, mask), "t": (t, mask)}


def test_the_ops_are_registered_only_while_the_test_runs():
    assert registry.get("TestCubePlus") is CUBE_PLUS and registry.get("TestRunningSum") is RUNNING_SUM


def test_shapes_are_inferred_through_both_ops():
    runner = load_text(NETWORK)
    assert runner.node("c").shape == (3,) and runner.node("s").shape == (3,)
    assert runner.node("z").shape == (2,)


def test_a_whole_sequence_op_keeps_the_time_axis():
    net = load_text(NETWORK).network
    assert isinstance(net.node("s").layout, SeqAxis)
    # Without it, the same network runs in frame mode: the elementwise op needs no time axis.
    frame = load_text("x = Input {3}\nc = new ComputationNode [ operation = 'TestCubePlus' ; inputs = x ]").network
    assert frame.node("c").layout is BATCH


def test_the_forward_values_follow_the_kernels():
    runner = load_text(NETWORK)
    feeds = padded_batch()
    x, mask = feeds["x"]
    out = runner.forward(feeds, ["s"])["s"]
    expected = np.cumsum(x ** 3 + x, axis=0) * mask[..., None]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_the_gradient_matches_finite_differences():
    runner = load_text(NETWORK)
    feeds = padded_batch()
    grad = runner.gradients(feeds, "loss", ["W"])["W"]
    W = runner.parameters["W"]
    numeric = np.zeros_like(W)
    for index in np.ndindex(W.shape):
        keep = W[index]
        values = []
        for step in (1e-6, -1e-6):
            W[index] = keep + step
            values.append(float(runner.forward(feeds, ["loss"])["loss"].sum()))
        W[index] = keep
        numeric[index] = (values[0] - values[1]) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_the_elementwise_op_broadcasts_and_sums_its_gradient_back():
    runner = load_text("""
        x = Input {3}
        b = ParameterTensor {(3), init='fixedValue', value=0.5}
        c = new ComputationNode [ operation = 'TestCubePlus' ; inputs = b ]
        loss = ReduceSum (x .* c)
        criterionNodes = (loss)""")
    x = np.random.default_rng(1).uniform(-1, 1, (5, 3))
    grad = runner.gradients({"x": x}, "loss", ["b"])["b"]
    np.testing.assert_allclose(grad, x.sum(axis=0) * (3 * 0.25 + 1))


def test_a_whole_sequence_op_inside_a_recurrent_loop_is_refused():
    with pytest.raises(NetlangError, match="TestRunningSum .* needs the whole sequence"):
        load_text("""
            x = Input {3}
            h = new ComputationNode [ operation = 'TestRunningSum' ; inputs = x + PastValue (0, h) ]""")
