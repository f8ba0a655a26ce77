"""Elementwise ops: arithmetic, nonlinearities, comparisons, If, Clip, Pass/StopGradient, Dropout.

All of them are `elementwise=True`: `registry.apply_forward` hands the kernels inputs already aligned
to the output's rank and dynamic axes, so NumPy broadcasting is BrainScript broadcasting, and the
gradients returned here (in the output's shape) are summed back to each input by `apply_backward`.
The shape rule is BrainScript's: left-aligned, a 1 stretches, a 0 (not yet inferred) adopts the
other side (`compiler.shapes.broadcast_shapes`).
"""
from __future__ import annotations

from netlang.errors import ConfigError
from netlang.ir.shapes import broadcast_shapes, format_shape
from netlang.ops.registry import InputSpec, OpCheck, OpDef, ShapeMismatch, register

# ---- shape rule --------------------------------------------------------------------------------

def broadcast_rule(in_shapes, attrs=None):
    """Output shape of an elementwise op: all operands broadcast together the BrainScript way."""
    out = tuple(in_shapes[0])
    for shape in in_shapes[1:]:
        try:
            out = broadcast_shapes(out, tuple(shape))
        except ValueError as err:
            shapes = " and ".join(format_shape(s) for s in in_shapes)
            raise ShapeMismatch(f"operands {shapes} cannot be broadcast together ({err})") from None
    return out


# ---- checks ------------------------------------------------------------------------------------

def _spec(shape, dyn=1, kind="float", low=-1.0, high=1.0, grad=True):
    return InputSpec(shape, dyn, kind, low, high, grad)


def unary_checks(kind="float", low=-1.0, high=1.0, grad=True):
    """Batch, sequence and static operands of one unary elementwise op."""
    return [
        OpCheck((_spec((3, 4), 1, kind, low, high),), out=(3, 4), grad=grad),
        OpCheck((_spec((5,), 2, kind, low, high),), out=(5,), grad=grad),
        OpCheck((_spec((2, 3), 0, kind, low, high),), out=(2, 3), grad=grad),
    ]


def binary_checks(kind_a="float", kind_b="float", grad=True, low=-1.0, high=1.0):
    """Same shapes, a static bias against a batch (both orders), stretching 1s, batch vs sequence, and
    a batch of a lower rank against a static value of a higher one (W * x + B with B of shape (n:1))."""
    def a(shape, dyn):
        return _spec(shape, dyn, kind_a, low, high)

    def b(shape, dyn):
        return _spec(shape, dyn, kind_b, low, high)

    return [
        OpCheck((a((3, 4), 1), b((3, 4), 1)), out=(3, 4), grad=grad),
        OpCheck((a((3,), 0), b((3, 4), 1)), out=(3, 4), grad=grad),
        OpCheck((a((3, 4), 1), b((3,), 0)), out=(3, 4), grad=grad),
        OpCheck((a((3, 1), 1), b((1, 4), 0)), out=(3, 4), grad=grad),
        OpCheck((a((2,), 2), b((2,), 1)), out=(2,), grad=grad),
        OpCheck((a((3,), 1), b((3, 1), 0)), out=(3, 1), grad=grad),
    ]


# ---- unary ops ---------------------------------------------------------------------------------

def _unary(name, fn, grad, doc, kind="float", low=-1.0, high=1.0, aliases=(), gpu=None):
    """Register a one-input elementwise op from `fn(x, xp)` and `grad(x, y, gy, xp)` (None: no gradient).

    `gpu = (forward, backward)` are the same formulas as one CUDA statement each (`y = …` of `x`;
    `gx = …` of `x`, `y`, `gy`; None keeps the array-module form, already one kernel): on the CuPy
    backend each pass is then one fused kernel instead of one per operation and its temporaries."""

    def forward(ctx, xs, attrs):
        return fn(xs[0], ctx.xp)

    def backward(ctx, xs, y, gy, attrs):
        return [grad(xs[0], y, gy, ctx.xp)]

    register(OpDef(
        name=name, arity=(1, 1), shape=broadcast_rule, forward=forward,
        backward=backward if grad else None, elementwise=True, differentiable=grad is not None,
        checks=unary_checks(kind, low, high, grad=grad is not None), aliases=aliases, doc=doc,
        kernels={"cupy": _gpu_unary(name, gpu, forward, backward if grad else None)} if gpu else {},
    ))


def _gpu_unary(name, statements, forward, backward):
    """The CuPy kernels of a unary op from its CUDA statements (None: the array-module kernel)."""
    forward_statement, backward_statement = statements
    key = name.lower()

    def gpu_forward(ctx, xs, attrs):
        if forward_statement is None:
            return forward(ctx, xs, attrs)
        return ctx.backend.kernels.elementwise("T x", "T y", forward_statement, f"{key}_forward")(xs[0])

    def gpu_backward(ctx, xs, y, gy, attrs):
        if backward_statement is None:
            return backward(ctx, xs, y, gy, attrs)
        kernel = ctx.backend.kernels.elementwise("T x, T y, T gy", "T gx", backward_statement, f"{key}_backward")
        return [kernel(xs[0], y, gy)]

    return gpu_forward, gpu_backward if backward is not None else None


def _sigmoid(x, xp):
    # 1/(1+exp(-x)) overflows for large negative x; the tanh form is stable over the whole range.
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def _softplus(x, xp):
    # log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|)).
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


_unary("Negate", lambda x, xp: -x, lambda x, y, gy, xp: -gy, "−x")
_unary("Reciprocal", lambda x, xp: 1.0 / x, lambda x, y, gy, xp: -gy * y * y, "1/x",
       kind="positive", gpu=(None, "gx = -gy * y * y"))
_unary("Abs", lambda x, xp: xp.abs(x), lambda x, y, gy, xp: gy * xp.sign(x), "|x|", kind="nonzero",
       gpu=(None, "gx = gy * (T)((x > (T)0) - (x < (T)0))"))
_unary("Exp", lambda x, xp: xp.exp(x), lambda x, y, gy, xp: gy * y, "eˣ")
_unary("Log", lambda x, xp: xp.log(x), lambda x, y, gy, xp: gy / x, "natural logarithm",
       kind="positive")
_unary("Sqrt", lambda x, xp: xp.sqrt(x), lambda x, y, gy, xp: gy * 0.5 / y, "square root",
       kind="positive", gpu=(None, "gx = gy * (T)0.5 / y"))
_unary("Square", lambda x, xp: x * x, lambda x, y, gy, xp: 2.0 * x * gy, "x²", gpu=(None, "gx = (T)2 * x * gy"))
_unary("Sin", lambda x, xp: xp.sin(x), lambda x, y, gy, xp: gy * xp.cos(x), "sine", gpu=(None, "gx = gy * cos(x)"))
_unary("Cos", lambda x, xp: xp.cos(x), lambda x, y, gy, xp: -gy * xp.sin(x), "cosine",
       aliases=("Cosine",), gpu=(None, "gx = -gy * sin(x)"))
_unary("Sigmoid", _sigmoid, lambda x, y, gy, xp: gy * y * (1.0 - y), "logistic function 1/(1+e⁻ˣ)",
       low=-3.0, high=3.0, gpu=("y = (T)0.5 * ((T)1 + tanh((T)0.5 * x))", "gx = gy * y * ((T)1 - y)"))
_unary("Tanh", lambda x, xp: xp.tanh(x), lambda x, y, gy, xp: gy * (1.0 - y * y), "hyperbolic tangent",
       low=-2.0, high=2.0, gpu=(None, "gx = gy * ((T)1 - y * y)"))
_unary("ReLU", lambda x, xp: xp.maximum(x, 0), lambda x, y, gy, xp: gy * (x > 0),
       "max(x, 0)", kind="nonzero", aliases=("RectifiedLinear",), gpu=(None, "gx = x > (T)0 ? gy : (T)0"))
_unary("ELU", lambda x, xp: xp.where(x > 0, x, xp.expm1(xp.minimum(x, 0))),
       lambda x, y, gy, xp: xp.where(x > 0, gy, gy * (y + 1.0)),
       "exponential linear unit: x for x > 0, eˣ − 1 otherwise", kind="nonzero",
       gpu=("y = x > (T)0 ? x : expm1(x)", "gx = x > (T)0 ? gy : gy * (y + (T)1)"))
_unary("Softplus", _softplus, lambda x, y, gy, xp: gy * _sigmoid(x, xp), "log(1 + eˣ), computed stably",
       low=-3.0, high=3.0, gpu=("y = max(x, (T)0) + log1p(exp(-fabs(x)))",
                                "gx = gy * ((T)0.5 * ((T)1 + tanh((T)0.5 * x)))"))
# Floor, Ceil and Round are registered non-differentiable (their derivative is 0 almost everywhere):
# autodiff stops at them rather than propagating zeros.
_unary("Floor", lambda x, xp: xp.floor(x), None, "largest integer ≤ x (no gradient)", low=-3.0, high=3.0)
_unary("Ceil", lambda x, xp: xp.ceil(x), None, "smallest integer ≥ x (no gradient)", low=-3.0, high=3.0)
_unary("Round", lambda x, xp: xp.floor(x + 0.5), None,
       "Floor(x + 0.5) as CNTK rounds, halves go up (no gradient)", low=-3.0, high=3.0)
_unary("Pass", lambda x, xp: x, lambda x, y, gy, xp: gy, "identity")
_unary("StopGradient", lambda x, xp: x, None, "identity in the forward pass; no gradient flows back")


# ---- binary arithmetic -------------------------------------------------------------------------

def _binary(name, fn, grads, doc, kind_b="float", aliases=()):
    """Register a two-input elementwise op from `fn(a, b, xp)` and `grads(a, b, y, gy, xp)`."""

    def forward(ctx, xs, attrs):
        return fn(xs[0], xs[1], ctx.xp)

    def backward(ctx, xs, y, gy, attrs):
        return list(grads(xs[0], xs[1], y, gy, ctx.xp))

    register(OpDef(
        name=name, arity=(2, 2), shape=broadcast_rule, forward=forward, backward=backward,
        elementwise=True, checks=binary_checks(kind_b=kind_b), aliases=aliases, doc=doc,
    ))


_binary("Plus", lambda a, b, xp: a + b, lambda a, b, y, gy, xp: (gy, gy), "a + b")
_binary("Minus", lambda a, b, xp: a - b, lambda a, b, y, gy, xp: (gy, -gy), "a − b")
_binary("ElementTimes", lambda a, b, xp: a * b, lambda a, b, y, gy, xp: (gy * b, gy * a),
        "elementwise product a .* b")
_binary("ElementDivide", lambda a, b, xp: a / b, lambda a, b, y, gy, xp: (gy / b, -gy * y / b),
        "elementwise quotient a ./ b", kind_b="positive")


# ---- comparisons: 0/1 outputs, no gradient -----------------------------------------------------

def _comparison(name, fn, doc):
    def forward(ctx, xs, attrs):
        a, b = xs
        return fn(a, b).astype(a.dtype)

    # Small integers make ties likely, so Equal and friends see both outcomes in the checks.
    register(OpDef(
        name=name, arity=(2, 2), shape=broadcast_rule, forward=forward, elementwise=True,
        differentiable=False, checks=binary_checks("int", "int", grad=False), doc=doc,
    ))


_comparison("Less", lambda a, b: a < b, "1 where a < b, else 0")
_comparison("Equal", lambda a, b: a == b, "1 where a == b, else 0")
_comparison("Greater", lambda a, b: a > b, "1 where a > b, else 0")
_comparison("GreaterEqual", lambda a, b: a >= b, "1 where a ≥ b, else 0")
_comparison("NotEqual", lambda a, b: a != b, "1 where a ≠ b, else 0")
_comparison("LessEqual", lambda a, b: a <= b, "1 where a ≤ b, else 0")


# ---- Clip(min, max, x): CNTK's node input order ------------------------------------------------

def _clip_forward(ctx, xs, attrs):
    lo, hi, x = xs
    return ctx.xp.minimum(ctx.xp.maximum(x, lo), hi)


def _clip_backward(ctx, xs, y, gy, attrs):
    lo, hi, x = xs
    inside = (x >= lo) & (x <= hi)
    return [None, None, gy * inside]      # the bounds are constants: no gradient flows to them


_BOUND_LO = InputSpec((1,), 0, "float", -0.6, -0.4, grad=False)
_BOUND_HI = InputSpec((1,), 0, "float", 0.4, 0.6, grad=False)

register(OpDef(
    name="Clip", arity=(3, 3), shape=broadcast_rule, forward=_clip_forward, backward=_clip_backward,
    elementwise=True, doc="x limited to [min, max] (inputs min, max, x); gradient to x only",
    checks=[
        OpCheck((_BOUND_LO, _BOUND_HI, _spec((3, 4), 1)), out=(3, 4)),
        OpCheck((InputSpec((3,), 0, "float", -0.6, -0.4, grad=False),
                 InputSpec((3,), 0, "float", 0.4, 0.6, grad=False), _spec((3, 2), 2)), out=(3, 2)),
    ],
))


# ---- If(cond, then, else) ----------------------------------------------------------------------

def _if_forward(ctx, xs, attrs):
    cond, then, other = xs
    return ctx.xp.where(cond != 0, then, other)


def _if_backward(ctx, xs, y, gy, attrs):
    cond = (xs[0] != 0).astype(gy.dtype)
    return [None, gy * cond, gy * (1.0 - cond)]


_COND = InputSpec((3, 4), 1, "binary", grad=False)

register(OpDef(
    name="If", arity=(3, 3), shape=broadcast_rule, forward=_if_forward, backward=_if_backward,
    elementwise=True, aliases=("ElementSelect",),
    doc="then where cond ≠ 0, else otherwise; gradient flows to then/else only",
    checks=[
        OpCheck((_COND, _spec((3, 4), 1), _spec((3, 4), 1)), out=(3, 4)),
        OpCheck((InputSpec((3,), 1, "binary", grad=False), _spec((3,), 0), _spec((1,), 0)), out=(3,)),
        OpCheck((InputSpec((2,), 2, "binary", grad=False), _spec((2,), 1), _spec((2,), 2)), out=(2,)),
    ],
))


# ---- Dropout -----------------------------------------------------------------------------------

def _dropout_rate(ctx, attrs) -> float:
    # A node attribute wins (CNTK 2's dropout(x, rate)); otherwise the SGD block's dropoutRate.
    rate = float(attrs.get("dropoutRate", ctx.options.get("dropoutRate", 0.0)) or 0.0)
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"dropoutRate {rate} is outside [0, 1)", key="dropoutRate",
                          hint="the probability of dropping a value must be at least 0 and below 1")
    return rate


def _dropout_forward(ctx, xs, attrs):
    x = xs[0]
    rate = _dropout_rate(ctx, attrs)
    if not ctx.training or rate == 0.0:
        ctx.saved["mask"] = None
        return x
    # Inverted dropout: survivors are scaled by 1/(1-rate) at training, so inference is the identity.
    keep = ctx.rng.random(x.shape) >= rate      # drawn on the device, by the backend's generator
    mask = keep.astype(x.dtype) * (1.0 / (1.0 - rate))
    ctx.saved["mask"] = mask
    return x * mask


def _gpu_dropout_forward(ctx, xs, attrs):
    """Dropout on the CuPy backend: the uniform draws become mask and output in one kernel."""
    x = xs[0]
    rate = _dropout_rate(ctx, attrs)
    if not ctx.training or rate == 0.0:
        ctx.saved["mask"] = None
        return x
    kernel = ctx.backend.kernels.elementwise(
        "T x, float64 u, float64 rate, T scale", "T y, T mask",
        "mask = u >= rate ? scale : (T)0; y = x * mask", "dropout_forward")
    y, mask = kernel(x, ctx.rng.random(x.shape), rate, x.dtype.type(1.0 / (1.0 - rate)))
    ctx.saved["mask"] = mask
    return y


def _dropout_backward(ctx, xs, y, gy, attrs):
    if "mask" in ctx.saved:
        mask = ctx.saved["mask"]
    elif not ctx.training or _dropout_rate(ctx, attrs) == 0.0:
        mask = None                            # forward was the identity
    else:
        # The mask cannot be drawn again (the generator has moved on); a gradient without it
        # would be silently wrong.
        raise RuntimeError(f"Dropout '{ctx.node_name}': backward needs the mask saved by forward "
                           "(the executor must hand backward the forward call's ctx.saved)")
    return [gy if mask is None else gy * mask]


register(OpDef(
    name="Dropout", arity=(1, 1), shape=broadcast_rule, forward=_dropout_forward,
    backward=_dropout_backward, elementwise=True, random=True,
    kernels={"cupy": (_gpu_dropout_forward, _dropout_backward)},
    doc="zero each value with probability dropoutRate at training, scale survivors by 1/(1−rate)",
    checks=[
        OpCheck((_spec((3, 4), 1),), attrs={"dropoutRate": 0.5}, out=(3, 4)),
        OpCheck((_spec((4,), 2),), attrs={"dropoutRate": 0.25}, out=(4,)),
        OpCheck((_spec((3, 4), 1),), attrs={"dropoutRate": 0.5}, out=(3, 4), training=False),
        OpCheck((_spec((3,), 1),), out=(3,)),
    ],
))
