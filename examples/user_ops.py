"""Ops of your own, in Python: this module registers two, and examples/user_op.net uses them.

A config imports it with `opModules = "$ConfigDir$/user_ops.py"`; Python code with
`netlang.load_model(path, op_modules=["examples/user_ops.py"])`. Each op is one `OpDef` given to the
registry's `register`, as netlang's own ops are (netlang/ops/): a shape rule, a forward kernel and
a backward kernel, or `differentiable=False` for an op no gradient flows through. Kernels receive
arrays in run-time layout (batch axis first) and compute with `ctx.xp`, NumPy or CuPy.
"""
from netlang.ops.registry import OpDef, register


def same_shape(in_shapes, attrs):
    """The output has the shape of the input (BrainScript sample shapes)."""
    return tuple(in_shapes[0])


def swish_forward(ctx, xs, attrs):
    x = xs[0]
    return x / (1.0 + ctx.xp.exp(-x))


def swish_backward(ctx, xs, y, gy, attrs):
    """One gradient per input: d swish/dx = s + x·s·(1 − s) with s = sigmoid(x)."""
    x = xs[0]
    s = 1.0 / (1.0 + ctx.xp.exp(-x))
    return [gy * (s + x * s * (1.0 - s))]


def hard_step_forward(ctx, xs, attrs):
    return (xs[0] > attrs.get("threshold", 0.0)).astype(xs[0].dtype)


register(OpDef(name="Swish", arity=(1, 1), shape=same_shape, forward=swish_forward, backward=swish_backward,
               doc="x · sigmoid(x) (user op from examples/user_ops.py)"))
register(OpDef(name="HardStep", arity=(1, 1), shape=same_shape, forward=hard_step_forward,
               differentiable=False, doc="1 where x > threshold, else 0; no gradient"))
