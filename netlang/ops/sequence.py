"""Operations on the time axis: delays (PastValue, FutureValue), layout changes and sequence ops.

Sequence values are `(T, N, *sample)` with `ctx.mask` (T, N) telling the real steps: sequence n
occupies steps `0 … len(n)-1`, the rest is padding (registry conventions). Every op here writes 0
into the padding of its output and sends no gradient from padding, so a padded minibatch computes
exactly what each sequence would compute alone.

* `PastValue(x, [initialState])`, `FutureValue(…)`: x at t-k (t+k) within the same sequence; where
  there is no such step, the initial state (a second input: static or one value per sequence) or
  the constant `defaultHiddenActivation`. Run here over whole sequences when the delay is not part
  of a recurrent loop; inside a loop `runtime/recurrence.py` runs them one step at a time with the
  same rule (`delay_valid`, `initial_state`).
* `ReconcileDynamicAxis(data, layout)`: a static, per-sequence (BATCH) or one-step-per-sequence
  value broadcast over the steps of `layout`'s sequences.
* `Where(cond)`: the times t at which cond ≠ 0, as a new, shorter sequence; `PackedIndex`,
  `GatherPacked`, `ScatterPacked` turn such times into positions of the packed minibatch (t·N + n)
  and gather/scatter by them. Padding of an index sequence holds -1.
* `TimeReverse`, `SequenceSlice` (Slice with axis=-1), `SequenceFirst`, `SequenceLast` and
  `SequenceReduce` (Sum, Mean, Max, Min, LogSum over the real steps); the last three give one value
  per sequence (BATCH layout).

Layout rules receive the input nodes at compile time and plain dynamic-axis counts (0, 1, 2) in the
registry checks; `_layout_rule` hides the difference.
"""
from __future__ import annotations

from netlang.errors import DataError
from netlang.ir.graph import BATCH, SeqAxis
from netlang.ir.shapes import broadcast_shapes, format_shape, num_elements
from netlang.ops.registry import InputSpec, OpCheck, OpDef, Param, ShapeMismatch, Signature, register, unbroadcast

# ---- layouts -----------------------------------------------------------------------------------

def _layout_of(item):
    return getattr(item, "layout", item)


def _is_check(inputs) -> bool:
    """True when the layout rule is called by the registry checks (with dynamic-axis counts)."""
    return bool(inputs) and isinstance(inputs[0], int)


def _same_as(index: int):
    def rule(inputs, attrs):
        return _layout_of(inputs[index])
    return rule


def _per_sequence(inputs, attrs):
    """One value per sequence; a value that is not a sequence stays what it is."""
    layout = _layout_of(inputs[0])
    if _is_check(inputs):
        return min(layout, 1)
    return BATCH if isinstance(layout, SeqAxis) else layout


def _derived_axis(name_of):
    """A new sequence axis (shorter sequences), named by `name_of(input nodes, attrs)`."""
    def rule(inputs, attrs):
        if _is_check(inputs):
            return 2
        return SeqAxis(name_of(inputs, attrs))
    return rule


# ---- masks and small helpers -------------------------------------------------------------------

def valid_steps(ctx, x):
    """(T, N) bool of the real steps of the sequence value `x` (all steps when no mask is known)."""
    lead = x.shape[:2]
    if ctx.mask is not None and tuple(ctx.mask.shape) == tuple(lead):
        return ctx.mask
    return ctx.xp.ones(lead, dtype=bool)


def _expand(flags, ndim: int):
    """(T, N) or (N,) flags reshaped to broadcast against an array of `ndim` axes."""
    return flags.reshape(flags.shape + (1,) * (ndim - flags.ndim))


def _lengths(mask):
    return mask.sum(axis=0)


def _int(x):
    """Index values carried in a float array (Where, PackedIndex) as integers, shape (T, N)."""
    return x.reshape(x.shape[:2] + (-1,))[..., 0].astype("int64")


# ---- PastValue / FutureValue -------------------------------------------------------------------

# The delay's input and initial state are inputs; `shape` (0s: inferred from the input) defaults
# to the input's shape.
DELAY_SIGNATURE = Signature((Param("shape", None, aliases=("dims",)), Param("timeStep", 1),
                             Param("defaultHiddenActivation", 0.1)))


def _dims_attr(attrs) -> tuple:
    dims = DELAY_SIGNATURE.value(attrs, "shape")
    if dims is None:
        return ()
    return (int(dims),) if isinstance(dims, (int, float)) else tuple(int(d) for d in dims)


def time_step(attrs) -> int:
    k = int(DELAY_SIGNATURE.value(attrs, "timeStep"))
    if k < 1:
        raise ShapeMismatch(f"timeStep must be 1 or more, got {k}")
    return k


def _delay_rule(in_shapes, attrs):
    time_step(attrs)
    x, dims = tuple(in_shapes[0]), _dims_attr(attrs)
    known = bool(x) and all(d > 0 for d in x)
    dims_known = bool(dims) and all(d > 0 for d in dims)
    if known and dims_known and num_elements(dims) != num_elements(x):
        raise ShapeMismatch(f"the declared dimensions {format_shape(dims)} do not match the input "
                            f"{format_shape(x)}")
    out = x if known else dims
    if len(in_shapes) > 1 and in_shapes[1] and all(d > 0 for d in out):
        try:
            fits = broadcast_shapes(out, tuple(in_shapes[1])) == tuple(out)
        except ValueError:
            fits = False
        if not fits:
            raise ShapeMismatch(f"the initial state {format_shape(in_shapes[1])} does not broadcast to the "
                                f"value {format_shape(out)}")
    return out


def delay_valid(mask, k: int, future: bool, xp):
    """(T, N) bool: where a delay reads a real step, not its initial state.

    PastValue at t reads t-k when t ≥ k and t itself is real; FutureValue reads t+k when that step
    is real (sequences start at t = 0, so padding never lies between real steps).
    """
    T = mask.shape[0]
    valid = xp.zeros_like(mask)
    if k < T:
        if future:
            valid[:T - k] = mask[k:]
        else:
            valid[k:] = mask[k:]
    return valid


def initial_state(ctx, xs, attrs, x, lead: int):
    """The delay's initial state, aligned to broadcast against `x` (`lead` dynamic axes first)."""
    if len(xs) < 2:
        return ctx.xp.asarray(float(DELAY_SIGNATURE.value(attrs, "defaultHiddenActivation")), dtype=x.dtype)
    init, dyn = _initial_input(ctx, xs)
    return init.reshape(_aligned_shape(init, dyn, lead, x.ndim))


def initial_state_gradient(ctx, xs, g_init, lead: int):
    """`g_init` (broadcast against the delay's output) summed back to the initial-state input."""
    init, dyn = _initial_input(ctx, xs)
    grad = unbroadcast(g_init, _aligned_shape(init, dyn, lead, g_init.ndim)).reshape(init.shape)
    if ctx.dyn[1] < 2:
        return grad
    full = ctx.xp.zeros_like(xs[1])
    full[0] = grad
    return full


def _initial_input(ctx, xs):
    """The initial-state input and its dynamic axes; of a sequence only the first step counts."""
    init, dyn = xs[1], ctx.dyn[1]
    return (init[0], 1) if dyn == 2 else (init, dyn)


def _aligned_shape(init, dyn: int, lead: int, ndim: int) -> tuple:
    """Shape of `init` (dyn 0: static, 1: one per sequence) broadcastable against `ndim` axes."""
    sample = init.shape[dyn:]
    pad = (1,) * (ndim - lead - len(sample))
    head = (1,) * lead if dyn == 0 else (1,) * (lead - 1) + init.shape[:1]
    return head + pad + sample


def _shifted(x, k: int, future: bool, xp):
    out = xp.zeros_like(x)
    T = x.shape[0]
    if k < T:
        if future:
            out[:T - k] = x[k:]
        else:
            out[k:] = x[:T - k]
    return out


def _make_delay(future: bool):
    def forward(ctx, xs, attrs):
        x, k, xp = xs[0], time_step(attrs), ctx.xp
        mask = valid_steps(ctx, x)
        valid = _expand(delay_valid(mask, k, future, xp), x.ndim)
        init = initial_state(ctx, xs, attrs, x, lead=2)
        y = xp.where(valid, _shifted(x, k, future, xp), init).astype(x.dtype, copy=False)
        if ctx.carry is not None and not future:
            # Truncated BPTT: a continuing sequence's first k steps read the previous window.
            carried, history = ctx.carry.read(ctx.state, k, mask, xp)
            if carried is not None:
                padded = xp.zeros_like(x)
                steps = min(k, x.shape[0])
                padded[:steps] = history[:steps]
                y = xp.where(_expand(carried, x.ndim), padded, y)
                ctx.saved["carried"] = carried
            ctx.carry.write(ctx.state, x, k, history, xp)
        return y

    def backward(ctx, xs, y, gy, attrs):
        x, k = xs[0], time_step(attrs)
        valid = _expand(delay_valid(valid_steps(ctx, x), k, future, ctx.xp), x.ndim)
        read = ctx.xp.where(valid, gy, 0)
        # Step t read x at t∓k: shifting the other way gives each x step its reader's gradient.
        gx = _shifted(read, k, not future, ctx.xp)
        grads = [gx]
        if len(xs) > 1:
            # Steps that read the previous window (truncated BPTT) pass no gradient on.
            carried = ctx.saved.get("carried")
            took_initial = ~valid if carried is None else ~(valid | _expand(carried, x.ndim))
            grads.append(initial_state_gradient(ctx, xs, ctx.xp.where(took_initial, gy, 0), lead=2))
        return grads

    return forward, backward


def _delay_checks():
    seq = InputSpec((3,), 2)
    return [
        OpCheck((seq,), attrs={"timeStep": 1}, out=(3,)),
        OpCheck((seq,), attrs={"timeStep": 2, "defaultHiddenActivation": 0.5}, out=(3,)),
        OpCheck((InputSpec((2, 2), 2), InputSpec((2,), 0)), out=(2, 2)),   # static initial state
        OpCheck((seq, InputSpec((3,), 1)), out=(3,)),                          # one per sequence
        OpCheck((seq, InputSpec((1,), 0)), attrs={"timeStep": 1, "shape": (3,)}, out=(3,)),
    ]


_READS_NEXT_WINDOW = (
    ("truncated BPTT cannot run FutureValue '{name}': it would read steps of the next window, which is not "
     "there yet"),
    "train a network with FutureValue (a backward or bidirectional layer) on whole sequences: truncated = false")

for _name, _future in (("PastValue", False), ("FutureValue", True)):
    _fwd, _bwd = _make_delay(_future)
    register(OpDef(
        name=_name, arity=(1, 2), shape=_delay_rule, forward=_fwd, backward=_bwd, layout=_same_as(0),
        aliases=("Delay",) if not _future else (), signature=DELAY_SIGNATURE, delay=-1 if _future else 1,
        truncation_unsafe=_READS_NEXT_WINDOW if _future else None,
        doc=("input at t-timeStep" if not _future else "input at t+timeStep")
        + " in the same sequence; the initial state (2nd input or defaultHiddenActivation) beyond its "
        + ("start" if not _future else "end"),
        checks=_delay_checks(),
    ))


# ---- ReconcileDynamicAxis ----------------------------------------------------------------------

def _reconcile_source(ctx, data, layout):
    """`data` reshaped to broadcast over `layout`'s dynamic axes."""
    dd, dl = ctx.dyn
    sample = data.shape[dd:]
    if dd == 0:
        return data.reshape((1,) * dl + sample)
    if dd == 1 and dl == 2:
        return data[None]
    if dd == dl and (dd == 1 or data.shape[0] in (1, layout.shape[0])):
        return data
    raise ShapeMismatch(f"ReconcileDynamicAxis cannot lay data with dynamic axes {data.shape[:dd]} "
                        f"over {layout.shape[:dl]}")


def _reconcile_forward(ctx, xs, attrs):
    data, layout = xs
    dl = ctx.dyn[1]
    src = _reconcile_source(ctx, data, layout)
    lead = layout.shape[:dl]
    if ctx.dyn[0] and src.shape[dl - 1] != lead[-1]:
        raise DataError(f"ReconcileDynamicAxis '{ctx.node_name}': the data has {src.shape[dl - 1]} sequences, "
                        f"the layout {lead[-1]}",
                        hint="per-sequence data (e.g. an intent label) must come with every sequence")
    out = ctx.xp.broadcast_to(src, lead + data.shape[ctx.dyn[0]:])
    if dl == 2:
        return ctx.xp.where(_expand(valid_steps(ctx, layout), out.ndim), out, 0).astype(data.dtype, copy=False)
    return ctx.xp.array(out)


def _reconcile_backward(ctx, xs, y, gy, attrs):
    data, layout = xs
    src = _reconcile_source(ctx, data, layout)
    if ctx.dyn[1] == 2:
        gy = ctx.xp.where(_expand(valid_steps(ctx, layout), gy.ndim), gy, 0)
    return [unbroadcast(gy, src.shape).reshape(data.shape), None]


register(OpDef(
    name="ReconcileDynamicAxis", arity=(2, 2), shape=lambda s, a: tuple(s[0]),
    forward=_reconcile_forward, backward=_reconcile_backward, layout=_same_as(1),
    aliases=("ReconcileMBLayout",), needs_time_axis=True,
    doc="the data (static, one value per sequence, or one step per sequence) on the layout input's dynamic axes",
    checks=[
        OpCheck((InputSpec((3,), 1), InputSpec((2,), 2, grad=False)), out=(3,)),
        OpCheck((InputSpec((2, 2), 0), InputSpec((1,), 2, grad=False)), out=(2, 2)),
        OpCheck((InputSpec((3,), 2), InputSpec((4,), 2, grad=False)), out=(3,)),
        OpCheck((InputSpec((3,), 0), InputSpec((2,), 1, grad=False)), out=(3,)),
    ],
))


# ---- Where, PackedIndex, GatherPacked, ScatterPacked -------------------------------------------

def _where_forward(ctx, xs, attrs):
    xp, cond = ctx.xp, xs[0]
    flags = (_flat_first(cond) != 0) & valid_steps(ctx, cond)
    counts = _lengths(flags)
    steps = max(int(counts.max()), 1) if flags.shape[1] else 1
    # A stable sort of "not flagged" puts each sequence's flagged times first, in time order.
    times = xp.argsort(~flags, axis=0, kind="stable")[:steps]
    out_mask = xp.arange(steps)[:, None] < counts[None, :]
    ctx.saved["out_mask"] = out_mask
    return xp.where(out_mask, times, -1).astype(cond.dtype).reshape(times.shape + (1,))


def _flat_first(x):
    return x.reshape(x.shape[:2] + (-1,))[..., 0]


register(OpDef(
    name="Where", arity=(1, 1), shape=lambda s, a: (1,), forward=_where_forward, differentiable=False,
    whole_sequence=True,
    layout=_derived_axis(lambda inputs, attrs: f"Where({inputs[0].name})#{inputs[0].id}"),
    doc="the times t at which cond ≠ 0, as a new sequence per input sequence (padding holds -1)",
    checks=[OpCheck((InputSpec((1,), 2, "positive", grad=False),), out=(1,), grad=False)],
))


def _packed_index_forward(ctx, xs, attrs):
    layout, index = xs
    xp, n_seq = ctx.xp, layout.shape[1]
    idx = _int(index)
    valid = (idx >= 0) & valid_steps(ctx, index)
    packed = idx * n_seq + xp.arange(idx.shape[1])[None, :]
    return xp.where(valid, packed, -1).astype(index.dtype).reshape(index.shape)


register(OpDef(
    name="PackedIndex", arity=(2, 2), shape=lambda s, a: tuple(s[1]), forward=_packed_index_forward,
    differentiable=False, layout=_same_as(1), whole_sequence=True,
    doc="time indices into the layout input's sequences as positions t·N + n of the packed minibatch",
    checks=[OpCheck((InputSpec((2,), 2, grad=False), InputSpec((1,), 2, "int", grad=False, int_high=3)),
                    out=(1,), grad=False)],
))


def _packed_positions(ctx, index, rows: int):
    """(positions, valid) of an index sequence: -1 (padding) and out-of-range entries are invalid."""
    idx = _int(index)
    valid = (idx >= 0) & (idx < rows)
    if ctx.mask is not None and tuple(ctx.mask.shape) == tuple(idx.shape):
        valid = valid & ctx.mask
    return ctx.xp.where(valid, idx, 0), valid


def _gather_packed_forward(ctx, xs, attrs):
    index, source = xs
    flat = source.reshape((-1,) + source.shape[ctx.dyn[1]:])
    positions, valid = _packed_positions(ctx, index, flat.shape[0])
    out = flat[positions]
    return ctx.xp.where(_expand(valid, out.ndim), out, 0).astype(source.dtype, copy=False)


def _gather_packed_backward(ctx, xs, y, gy, attrs):
    index, source = xs
    flat_shape = (-1,) + source.shape[ctx.dyn[1]:]
    grad = ctx.xp.zeros_like(source).reshape(flat_shape)
    positions, valid = _packed_positions(ctx, index, grad.shape[0])
    ctx.backend.scatter_add(grad, positions[valid], gy[valid])
    return [None, grad.reshape(source.shape)]


register(OpDef(
    name="GatherPacked", arity=(2, 2), shape=lambda s, a: tuple(s[1]), forward=_gather_packed_forward,
    backward=_gather_packed_backward, layout=_same_as(0), whole_sequence=True,
    doc="the source's samples at the packed positions of the index sequence (on the index's axis)",
    checks=[OpCheck((InputSpec((1,), 2, "int", grad=False, int_high=6), InputSpec((2,), 2)), out=(2,))],
))


def _scatter_packed_forward(ctx, xs, attrs):
    cond, index, source = xs
    xp, lead = ctx.xp, cond.shape[:2]
    out = xp.zeros((lead[0] * lead[1],) + source.shape[ctx.dyn[2]:], dtype=source.dtype)
    idx = _int(index)
    valid = (idx >= 0) & (idx < out.shape[0])
    ctx.backend.scatter_add(out, idx[valid], source[valid])
    out = out.reshape(lead + out.shape[1:])
    return xp.where(_expand(valid_steps(ctx, cond), out.ndim), out, 0)


def _scatter_packed_backward(ctx, xs, y, gy, attrs):
    cond, index, source = xs
    xp = ctx.xp
    gy = xp.where(_expand(valid_steps(ctx, cond), gy.ndim), gy, 0)
    flat = gy.reshape((-1,) + gy.shape[2:])
    idx = _int(index)
    valid = (idx >= 0) & (idx < flat.shape[0])
    grad = flat[xp.where(valid, idx, 0)]
    return [None, None, xp.where(_expand(valid, grad.ndim), grad, 0).reshape(source.shape)]


register(OpDef(
    name="ScatterPacked", arity=(3, 3), shape=lambda s, a: tuple(s[2]), forward=_scatter_packed_forward,
    backward=_scatter_packed_backward, layout=_same_as(0), whole_sequence=True,
    doc="the source's samples written to the packed positions of the index sequence, on cond's axis (0 elsewhere)",
    checks=[OpCheck((InputSpec((1,), 2, "binary", grad=False), InputSpec((1,), 2, "int", grad=False, int_high=6),
                     InputSpec((2,), 2)), out=(2,))],
))


# ---- TimeReverse and SequenceSlice (Slice with axis=-1) ----------------------------------------

def _reversed_steps(ctx, x):
    """(source step, valid) for each output step: sequence n reversed within its own length."""
    xp = ctx.xp
    mask = valid_steps(ctx, x)
    source = _lengths(mask)[None, :] - 1 - xp.arange(x.shape[0])[:, None]
    return xp.maximum(source, 0), source >= 0


def _take_steps(x, steps, valid, xp):
    """out[t, n] = x[steps[t, n], n] where valid, else 0."""
    out = x[steps, xp.arange(x.shape[1])[None, :]]
    return xp.where(_expand(valid, out.ndim), out, 0).astype(x.dtype, copy=False)


def _time_reverse_forward(ctx, xs, attrs):
    x = xs[0]
    if ctx.dyn[0] < 2:
        return x
    steps, valid = _reversed_steps(ctx, x)
    return _take_steps(x, steps, valid, ctx.xp)


def _time_reverse_backward(ctx, xs, y, gy, attrs):
    if ctx.dyn[0] < 2:
        return [gy]
    steps, valid = _reversed_steps(ctx, xs[0])
    return [_take_steps(gy, steps, valid, ctx.xp)]      # reversing is its own inverse


register(OpDef(
    name="TimeReverse", arity=(1, 1), shape=lambda s, a: tuple(s[0]), forward=_time_reverse_forward,
    backward=_time_reverse_backward, layout=_same_as(0), whole_sequence=True,
    doc="each sequence in reverse order (within its own length)",
    checks=[OpCheck((InputSpec((3,), 2),), out=(3,)), OpCheck((InputSpec((2, 2), 2),), out=(2, 2))],
))


SEQUENCE_SLICE_SIGNATURE = Signature((Param("beginIndex", 0), Param("endIndex", 0), Param("axis", -1)))


def _slice_bounds(attrs):
    return (int(SEQUENCE_SLICE_SIGNATURE.value(attrs, "beginIndex")),
            int(SEQUENCE_SLICE_SIGNATURE.value(attrs, "endIndex")))


def _sliced_steps(ctx, x, attrs):
    """(source step, valid, new mask) of Slice(beginIndex, endIndex) on each sequence's own steps."""
    xp = ctx.xp
    begin, end = _slice_bounds(attrs)
    lengths = _lengths(valid_steps(ctx, x))
    # Bounds per sequence as arrays: CuPy's clip takes no Python number as its array.
    lo = xp.clip(xp.full_like(lengths, begin) if begin >= 0 else lengths + begin, 0, lengths)
    hi = xp.clip(xp.full_like(lengths, end) if end > 0 else lengths + end, 0, lengths)
    new_lengths = xp.maximum(hi - lo, 0)
    steps = max(int(new_lengths.max()), 1) if x.shape[1] else 1
    t = xp.arange(steps)[:, None]
    valid = t < new_lengths[None, :]
    return xp.where(valid, lo[None, :] + t, 0), valid


def _sequence_slice_forward(ctx, xs, attrs):
    x = xs[0]
    steps, valid = _sliced_steps(ctx, x, attrs)
    ctx.saved["out_mask"] = valid
    return _take_steps(x, steps, valid, ctx.xp)


def _sequence_slice_backward(ctx, xs, y, gy, attrs):
    x, xp = xs[0], ctx.xp
    steps, valid = _sliced_steps(ctx, x, attrs)
    grad = xp.zeros_like(x)
    columns = xp.broadcast_to(xp.arange(x.shape[1])[None, :], steps.shape)
    grad[steps[valid], columns[valid]] = gy[valid]       # each source step is read at most once
    return [grad]


def _slice_axis_name(inputs, attrs):
    begin, end = _slice_bounds(attrs)
    return f"{_layout_of(inputs[0])}[{begin}:{end if end else ''}]"


register(OpDef(
    name="SequenceSlice", arity=(1, 1), shape=lambda s, a: tuple(s[0]), forward=_sequence_slice_forward,
    backward=_sequence_slice_backward, layout=_derived_axis(_slice_axis_name), whole_sequence=True,
    signature=SEQUENCE_SLICE_SIGNATURE,
    doc="steps [beginIndex, endIndex) of each sequence (negative: from its end; endIndex 0: to the end), "
        "a new sequence axis; Slice with axis=-1",
    checks=[
        OpCheck((InputSpec((3,), 2),), attrs={"beginIndex": -3, "endIndex": 0}, out=(3,)),
        OpCheck((InputSpec((2, 2), 2),), attrs={"beginIndex": 0, "endIndex": 0}, out=(2, 2)),
    ],
))


# ---- First, Last, reductions over the steps (one value per sequence) ---------------------------

def _end_step(ctx, x, last: bool):
    xp = ctx.xp
    if not last:
        return xp.zeros(x.shape[1], dtype="int64")
    return xp.clip(_lengths(valid_steps(ctx, x)) - 1, 0, x.shape[0] - 1)


def _make_end(last: bool):
    def forward(ctx, xs, attrs):
        x = xs[0]
        if ctx.dyn[0] < 2:
            return x
        return x[_end_step(ctx, x, last), ctx.xp.arange(x.shape[1])]

    def backward(ctx, xs, y, gy, attrs):
        x = xs[0]
        if ctx.dyn[0] < 2:
            return [gy]
        grad = ctx.xp.zeros_like(x)
        grad[_end_step(ctx, x, last), ctx.xp.arange(x.shape[1])] = gy
        return [grad]

    return forward, backward


for _name, _last in (("SequenceFirst", False), ("SequenceLast", True)):
    _fwd, _bwd = _make_end(_last)
    register(OpDef(
        name=_name, arity=(1, 1), shape=lambda s, a: tuple(s[0]), forward=_fwd, backward=_bwd,
        layout=_per_sequence, whole_sequence=True,
        doc=f"the {'last' if _last else 'first'} step of each sequence, one value per sequence",
        checks=[OpCheck((InputSpec((3,), 2),), out=(3,)), OpCheck((InputSpec((2, 2), 2),), out=(2, 2))],
    ))

SEQUENCE_REDUCTIONS = ("Sum", "Mean", "Max", "Min", "LogSum")


SEQUENCE_REDUCE_SIGNATURE = Signature((Param("reductionOp", "Sum"),))


def _reduction(attrs) -> str:
    op = SEQUENCE_REDUCE_SIGNATURE.value(attrs, "reductionOp")
    if op not in SEQUENCE_REDUCTIONS:
        raise ShapeMismatch(f"unknown reductionOp '{op}' (one of {', '.join(SEQUENCE_REDUCTIONS)})")
    return op


def _sequence_reduce_rule(in_shapes, attrs):
    _reduction(attrs)
    return tuple(in_shapes[0])


def _sequence_reduce_forward(ctx, xs, attrs):
    x, xp, op = xs[0], ctx.xp, _reduction(attrs)
    if ctx.dyn[0] < 2:
        return x
    valid = _expand(valid_steps(ctx, x), x.ndim)
    if op in ("Sum", "Mean"):
        total = xp.where(valid, x, 0).sum(axis=0)
        return total if op == "Sum" else total / _count(ctx, x)
    if op in ("Max", "Min"):
        fill = -xp.inf if op == "Max" else xp.inf
        masked = xp.where(valid, x, fill)
        return (masked.max(axis=0) if op == "Max" else masked.min(axis=0)).astype(x.dtype, copy=False)
    top = xp.where(valid, x, -xp.inf).max(axis=0)
    return (top + xp.log(xp.where(valid, xp.exp(x - top[None]), 0).sum(axis=0))).astype(x.dtype, copy=False)


def _count(ctx, x):
    counts = ctx.xp.maximum(_lengths(valid_steps(ctx, x)), 1).astype(x.dtype)
    return counts.reshape(counts.shape + (1,) * (x.ndim - 2))


def _sequence_reduce_backward(ctx, xs, y, gy, attrs):
    x, xp, op = xs[0], ctx.xp, _reduction(attrs)
    if ctx.dyn[0] < 2:
        return [gy]
    valid = _expand(valid_steps(ctx, x), x.ndim)
    if op == "Sum":
        local = xp.ones_like(x)
    elif op == "Mean":
        local = xp.ones_like(x) / _count(ctx, x)[None]
    elif op == "LogSum":
        local = xp.exp(x - y[None])
    else:
        local = (x == y[None]).astype(x.dtype)
    return [xp.where(valid, local * gy[None], 0)]


register(OpDef(
    name="SequenceReduce", arity=(1, 1), shape=_sequence_reduce_rule, forward=_sequence_reduce_forward,
    backward=_sequence_reduce_backward, layout=_per_sequence, whole_sequence=True,
    signature=SEQUENCE_REDUCE_SIGNATURE,
    doc="Sum | Mean | Max | Min | LogSum over the real steps of each sequence, one value per sequence",
    checks=[OpCheck((InputSpec((3,), 2, low=-2.0, high=2.0),), attrs={"reductionOp": op}, out=(3,))
            for op in SEQUENCE_REDUCTIONS],
))
