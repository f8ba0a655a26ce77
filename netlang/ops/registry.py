"""The op registry: the single list of primitive operations netlang knows.

Each primitive is one `OpDef`, defined in one place (a module under `netlang/ops/`), holding its
shape rule, its forward kernel (and any per-backend kernels), its gradient, its BrainScript
signature, the flags the compiler passes need (delay, whole-sequence, time-axis form, sparse form,
leaf kind, truncated-BPTT safety) and the cases its checks run. Transformations (validation, loops,
frame mode, autodiff, the executor, the docs table, the gradient-check test) consume these rules
and flags and never name an op: adding an op is one module.

Conventions every op follows
----------------------------
* **Shapes in rules are BrainScript sample shapes**: tuples, first axis fastest (`W:H:C` is
  `(W, H, C)`, a weight matrix `(out, in)`). 0 means "not yet inferred". Axis attributes are the
  1-based BrainScript axes. Shape rules never see dynamic axes.
* **Arrays in kernels are row-major with the sample axes reversed**, preceded by the value's dynamic
  axes: a static value (parameter, constant) has shape `reversed(shape)`; a batch value
  `(N, *reversed(shape))`; a sequence value `(T, N, *reversed(shape))`. `ctx.dyn[i]` is the number
  of leading dynamic axes of input i (0, 1 or 2) and `ctx.out_dyn` that of the output. Convert a
  1-based BrainScript axis with `compiler.shapes.rm_axis`.
* **Elementwise ops** (`elementwise=True`) get their inputs aligned to the output's rank by
  `apply_forward` (dynamic axes present or of size 1, missing sample axes added as 1), so NumPy
  broadcasting is exactly BrainScript broadcasting. Their backward returns gradients in the
  broadcast (output) shape; `apply_backward` sums them back to each input's own shape.
* **Criteria** (`layout="none"`) reduce over the dynamic axes: the output is a static `(1,)` value,
  the *sum* over all valid samples (CNTK semantics: learning rates are per sample).
* Kernels are written against `ctx.xp` (numpy or cupy) and the services of `ctx.backend`
  (scatter_add, concatenate) and draw random numbers from `ctx.rng` on the device; they never test
  array types. They keep the input dtype (float32 or float64), and may stash what their backward
  needs in `ctx.saved` (per call) or persistent state in `ctx.state` (per node, e.g. batch-norm
  running statistics).
* Attributes with defaults or several spellings are read through the op's `Signature`
  (`SIGNATURE.value(attrs, "axis")`), so a default is written once.
* `backward(ctx, xs, y, gy, attrs)` returns one gradient (or None) per input.
* Run-time options that change per epoch come in `ctx.options` (e.g. `dropoutRate`). Precomputed
  statistics ops (`precompute=True`: Mean, InvStdDev) accumulate into `ctx.state` while
  `ctx.options["precompute_pass"]` is true; the trainer then calls `finalize(state, xp)`, after
  which forward returns the gathered statistic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

Shape = tuple  # BrainScript sample shape, first axis fastest


class ShapeMismatch(Exception):
    """Raised by shape rules; the compiler turns it into a NetworkError naming nodes and spans."""


@dataclass
class ShapeResult:
    """A shape rule's answer when it also infers dimensions of its operands (e.g. Times)."""

    out: Shape
    infer: dict[int, Shape] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSpec:
    """How the checks make one input: BS shape, dynamic axes, value kind and range."""

    shape: Shape
    dyn: int = 1                    # 0 static, 1 batch (N,...), 2 sequence (T,N,...)
    kind: str = "float"             # float | onehot | positive | binary | int
    low: float = -1.0
    high: float = 1.0
    grad: bool = True               # include in the finite-difference check
    int_high: int = 0               # for kind == "int": values in [0, int_high)


@dataclass(frozen=True)
class OpCheck:
    """One case of the registry-driven shape test and gradient check."""

    inputs: tuple[InputSpec, ...]
    attrs: dict = field(default_factory=dict)
    out: Shape | None = None        # expected output shape (BS); None: only run
    training: bool = True
    tol: float = 1e-5               # relative tolerance of the gradient check
    grad: bool = True               # False: only the shape test (op or case not differentiable)


REQUIRED = object()       # a signature parameter without a default


@dataclass(frozen=True)
class Param:
    """One attribute of an op as BrainScript passes it: its name, its default and other spellings
    (CNTK's function-argument and node-record names, e.g. `stride` / `strideShape`). The first
    spelling present (and not None) in a node's attributes wins, in the order name, *aliases."""

    name: str
    default: Any = REQUIRED
    aliases: tuple[str, ...] = ()

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.name,) + self.aliases


@dataclass(frozen=True)
class Signature:
    """The BrainScript-facing signature of an op: its attributes with their defaults and spellings.

    It is the one place a default lives in Python: kernels and shape rules read attributes through
    `value`, and the standard library's wrapper (stdlib/*.net), which BrainScript users call, is
    checked against it by tests/test_op_signatures.py (same names, same defaults).
    """

    params: tuple[Param, ...]

    def param(self, name: str) -> Param | None:
        """The parameter spelled `name` (its own name or an alias)."""
        return next((p for p in self.params if name in p.spellings), None)

    def given(self, attrs: dict, name: str):
        """The attribute `name` as the node gives it (the first spelling present), or None."""
        return next((attrs[s] for s in self.param(name).spellings if attrs.get(s) is not None), None)

    def value(self, attrs: dict, name: str):
        """The attribute `name` of a node: as given, else the default."""
        value = self.given(attrs, name)
        if value is not None:
            return value
        default = self.param(name).default
        if default is REQUIRED:
            raise ShapeMismatch(f"missing attribute '{name}'")
        return default

    @property
    def spellings(self) -> tuple[str, ...]:
        return tuple(s for p in self.params for s in p.spellings)


LEAF_KINDS = ("input", "sparse_input", "parameter", "constant")


@dataclass
class OpDef:
    """One primitive op: its rules, kernels and checks, and what the compiler passes need to know
    about it (they ask these fields, never the op's name)."""

    name: str                                   # CNTK operation name, e.g. "Times"
    arity: tuple[int, int]                      # (min, max) number of inputs; max -1 = any
    shape: Callable[[list[Shape], dict], Any]   # -> Shape or ShapeResult
    forward: Callable | None                    # (ctx, xs, attrs) -> array; None for leaves
    backward: Callable | None = None            # (ctx, xs, y, gy, attrs) -> list[array | None]
    elementwise: bool = False
    layout: str | Callable = "common"           # "common" | "none" | callable(in_layouts, attrs)
    differentiable: bool = True                 # False: gradient never flows (metrics, comparisons)
    stateful: bool = False                      # uses ctx.state (BN running stats …)
    random: bool = False                        # uses ctx.rng (dropout …)
    checks: list[OpCheck] = field(default_factory=list)
    aliases: tuple[str, ...] = ()
    doc: str = ""
    signature: Signature | None = None          # attributes: defaults and spellings (None: it has none)
    # Per-backend kernels, chosen by `ctx.backend.name` ("cupy": (forward, backward)); the
    # `forward`/`backward` above are the NumPy kernels and every backend's default.
    kernels: dict[str, tuple[Callable, Callable | None]] = field(default_factory=dict)
    # -- leaves: values bound by the executor rather than computed --
    leaf: str | None = None                     # one of LEAF_KINDS: how `new ComputationNode` builds it
    precompute: bool = False                    # Mean / InvStdDev: statistics gathered before training
    finalize: Callable | None = None            # (state, xp) -> None: turn gathered sums into the value
    # -- the time axis --
    delay: int = 0                              # +1 PastValue, -1 FutureValue: reads another time step;
                                                # its first input is attached late and closes loops
    whole_sequence: bool = False                # needs all steps at once: never inside a recurrent loop
    needs_time_axis: bool = False               # the network keeps sequences (no frame mode); implied by
                                                # `delay` and `whole_sequence`
    time_axis_form: str | None = None           # the op that does this on the time axis (axis < 0)
    # (message with {name}, hint) when truncated BPTT cannot run the op; None: it can
    truncation_unsafe: tuple[str, str] | None = None
    # -- sparse operands --
    sparse_form: str | None = None              # the op computing this one when input 2 is a sparse input
    sparse_operands: bool = False               # the kernels take SparseRows inputs as they are

    def __post_init__(self):
        if self.leaf is not None and self.leaf not in LEAF_KINDS:
            raise ValueError(f"op {self.name}: leaf must be one of {LEAF_KINDS}, not {self.leaf!r}")
        self.needs_time_axis = self.needs_time_axis or bool(self.delay) or self.whole_sequence

    def implementation(self, backend: str) -> tuple[Callable, Callable | None]:
        """(forward, backward) for the named backend: its own kernels if it has any, else the default."""
        return self.kernels.get(backend, (self.forward, self.backward))


class ArrayBackend(Protocol):
    """What a kernel may use of the backend (runtime/backend.py implements it): the array module
    and the services that differ between NumPy and CuPy. Kernels never test array types."""

    name: str                        # "numpy" | "cupy"
    xp: Any                          # the array module

    def scatter_add(self, dest, index, values) -> None: ...
    def concatenate(self, arrays, axis: int = 0): ...
    def to_host(self, array): ...    # a NumPy copy (for printing: the Trace op)


class RandomStream(Protocol):
    """The backend's random generator (`ctx.rng`): draws on the device where the arrays live."""

    def random(self, shape): ...     # uniform in [0, 1), float64


@dataclass
class OpContext:
    """What a kernel may use besides its inputs."""

    backend: ArrayBackend
    dyn: list[int]
    out_dyn: int
    training: bool = False
    rng: RandomStream | None = None
    mask: Any = None                 # (T, N) bool for sequence outputs, else None
    state: dict = field(default_factory=dict)
    saved: dict = field(default_factory=dict)
    node_name: str = ""
    options: dict = field(default_factory=dict)  # run-time options: dropoutRate, precompute_pass, …
    carry: Any = None                # truncated BPTT: runtime/carryover.CarryOver of this minibatch

    @property
    def xp(self):
        return self.backend.xp


_REGISTRY: dict[str, OpDef] = {}
_ALIASES: dict[str, str] = {}


def register(op: OpDef) -> OpDef:
    if op.name in _REGISTRY or op.name in _ALIASES:
        raise ValueError(f"op {op.name} registered twice")
    _REGISTRY[op.name] = op
    for alias in op.aliases:
        _ALIASES[alias] = op.name
    return op


def get(name: str) -> OpDef | None:
    name = _ALIASES.get(name, name)
    return _REGISTRY.get(name)


def unregister(name: str) -> None:
    """Remove an op registered for a while (a test's throwaway op)."""
    op = _REGISTRY.pop(name)
    for alias in op.aliases:
        _ALIASES.pop(alias, None)


def all_ops() -> list[OpDef]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def op_of(node) -> OpDef:
    """The OpDef of an IR node (the node was made through the registry, so it exists)."""
    return _REGISTRY[_ALIASES.get(node.op, node.op)]


def is_delay(node) -> bool:
    return op_of(node).delay != 0


def leaf_op(kind: str) -> OpDef:
    """The leaf op of a kind (`"sparse_input"` …)."""
    return next(op for op in _REGISTRY.values() if op.leaf == kind)


# ---- the one path from the executor (and the checks) into a kernel -------------------------------

def _aligned(x, dyn: int, out_dyn: int, out_rank: int):
    """Reshape `x` (dyn leading dynamic axes) to out_dyn dynamic axes + out_rank sample axes."""
    sample = x.shape[dyn:]
    lead = x.shape[:dyn] if dyn == out_dyn else (1,) * out_dyn if dyn == 0 else None
    if lead is None:
        if dyn == 1 and out_dyn == 2:      # batch value meets a sequence value: broadcast over T
            lead = (1,) + x.shape[:1]
        else:
            raise ShapeMismatch(f"cannot align dynamic axes {dyn} to {out_dyn}")
    pad = out_rank - len(sample)
    return x.reshape(lead + (1,) * pad + sample) if (pad or lead != x.shape[:dyn]) else x


def apply_forward(op: OpDef, ctx: OpContext, xs: list, attrs: dict, out_rank: int):
    forward, _ = op.implementation(ctx.backend.name)
    if op.elementwise:
        xs = [_aligned(x, d, ctx.out_dyn, out_rank) for x, d in zip(xs, ctx.dyn)]
    return forward(ctx, xs, attrs)


def unbroadcast(g, shape: tuple):
    """Sum `g` down to `shape` (the inverse of NumPy broadcasting, trailing-aligned)."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, (gs, s) in enumerate(zip(g.shape, shape)) if s == 1 and gs != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def apply_backward(op: OpDef, ctx: OpContext, xs: list, y, gy, attrs: dict, out_rank: int):
    _, backward = op.implementation(ctx.backend.name)
    if not op.differentiable or backward is None:
        return [None] * len(xs)
    if op.elementwise:
        aligned = [_aligned(x, d, ctx.out_dyn, out_rank) for x, d in zip(xs, ctx.dyn)]
        grads = backward(ctx, aligned, y, gy, attrs)
        # Sum back to the aligned shape (sample axes padded after the dynamic ones), then drop the padding.
        return [None if g is None else unbroadcast(g, a.shape).reshape(x.shape) for g, a, x in zip(grads, aligned, xs)]
    return backward(ctx, xs, y, gy, attrs)
