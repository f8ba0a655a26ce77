"""Running a recurrent loop over time: forward step by step, and backpropagation through time.

A `Loop` (compiler/loops.py) is a strongly connected component of the graph closed by delays. Its
nodes run one time step at a time — t = 0…T-1 for PastValue loops, T-1…0 for FutureValue loops —
on `(N, …)` slices, with the ops' ordinary kernels: a sequence input of the loop is read at step t,
a per-sequence (BATCH) or static input whole. Step outputs are kept per step; the loop nodes read
after the loop (`Loop.exported`, set by the plan) are stacked into `(T, N, …)` values. Everything
outside the loop was computed before over all steps at once (the LSTM's input projection is one
matrix product), so the per-step work is only what truly recurs.

A delay in the loop reads its input's output k steps earlier (later) where `delay_valid` says there
is a real step to read, and its initial state elsewhere — the same rule as the whole-sequence
kernel in runtime/ops/sequence.py. Since every sequence of the padded minibatch starts at t = 0,
state is reset at each sequence's start; a FutureValue loop starts each sequence at its own last
step because padding counts as "no step to read". In truncated BPTT a window that continues its
sequence reads the previous window's last steps there instead (runtime/truncation.py).

Backward runs the steps in the reverse order. A loop node's gradient at step t is complete when the
node is reached: its readers later in the same step were processed first, and the delays that read
it run at steps processed earlier. Gradients of sequence inputs are gathered per step into `(T, N,
…)` arrays; those of static and per-sequence inputs (weights, initial states) are summed. Kernels'
stashes (`ctx.saved`) are kept per step, so an op's backward sees what its forward saw.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from netlang.compiler.graph.loops import Loop
from netlang.ir.graph import Node, SeqAxis, dyn_rank
from netlang.ir.shapes import to_runtime
from netlang.ops import registry
from netlang.ops.registry import OpContext, OpDef, apply_backward, apply_forward
from netlang.ops.sequence import delay_valid, initial_state, initial_state_gradient, time_step
from netlang.ops.sparse import densified

# Where a loop node's input comes from at step t.
LOOP, STEP, WHOLE = 0, 1, 2


@dataclass
class RunState:
    """What one executor run holds, as far as a loop needs it."""

    backend: Any                                   # runtime/backend.Backend
    dtype: Any
    values: dict                                   # node id -> value
    grads: dict                                    # node id -> gradient
    masks: dict                                    # SeqAxis -> (T, N) bool
    saved: dict                                    # what forward keeps for backward
    context: Callable[[Node, dict], OpContext]     # a kernel context for a node
    carry: Any = None                              # truncated BPTT: runtime/truncation.CarryOver
    state: Callable[[Node], dict] | None = None    # a node's persistent state (where carried steps live)

    @property
    def xp(self):
        return self.backend.xp


@dataclass
class _NodeStep:
    """One loop node, prepared for running step by step."""

    node: Node
    op: OpDef
    sources: list[int]          # per input: LOOP, STEP or WHOLE
    rank: int                   # the node's sample rank
    ctx: OpContext | None = None  # one kernel context for all steps; `saved` is swapped per step
    delay: bool = False         # a delay that closes the loop (reads its input's earlier output)
    offset: int = 0             # for such a delay: the step read is t - offset


@dataclass
class _Trace:
    """What forward keeps for backward: step outputs, kernel stashes, delay boundaries."""

    steps: list[_NodeStep]
    times: list[int]
    inputs: dict                                        # external node id -> value (dense)
    outputs: dict = field(default_factory=dict)         # loop node id -> [output at step t]
    saved: dict = field(default_factory=dict)           # (node id, t) -> ctx.saved
    valid: dict = field(default_factory=dict)           # delay id -> (T, N, 1, …) bool
    initial: dict = field(default_factory=dict)         # delay id -> (N, …) initial state
    carried: dict = field(default_factory=dict)         # delay id -> (T, N, 1, …) bool: reads the previous window
    history: dict = field(default_factory=dict)         # delay id -> (k, N, …) what it reads there


def _prepare(node: Node, loop: Loop, run: RunState) -> _NodeStep:
    sources, dyn = [], []
    for inp in node.inputs:
        if inp.id in loop.ids:
            sources.append(LOOP)
            dyn.append(1)
        elif isinstance(inp.layout, SeqAxis):
            sources.append(STEP)
            dyn.append(1)
        else:
            sources.append(WHOLE)
            dyn.append(0 if inp.layout is None else 1)
    step = _NodeStep(node, registry.op_of(node), sources, len(node.shape))
    if step.op.delay and sources[0] == LOOP:
        step.delay = True
        step.offset = time_step(node.attrs) * step.op.delay
    else:
        step.ctx = run.context(node, {})
        step.ctx.dyn, step.ctx.out_dyn, step.ctx.mask = dyn, 1, None
    return step


def _operands(step: _NodeStep, t: int, trace: _Trace) -> list:
    xs = []
    for inp, source in zip(step.node.inputs, step.sources):
        if source == LOOP:
            xs.append(trace.outputs[inp.id][t])
        elif source == STEP:
            xs.append(trace.inputs[inp.id][t])
        else:
            xs.append(trace.inputs[inp.id])
    return xs


def _prepare_delay(run: RunState, step: _NodeStep, trace: _Trace, mask) -> None:
    """A delay's boundary flags and its initial state, broadcast to one step's (N, …)."""
    node, xp = step.node, run.xp
    sample = to_runtime(node.shape)
    valid = delay_valid(mask, abs(step.offset), step.offset < 0, xp)
    trace.valid[node.id] = valid.reshape(valid.shape + (1,) * len(sample))
    like = xp.empty((mask.shape[1],) + sample, dtype=run.dtype)
    ctx = run.context(node, {})
    ctx.dyn = [2] + [dyn_rank(i.layout) for i in node.inputs[1:]]
    xs = [None] + [trace.inputs[i.id] for i in node.inputs[1:]]
    init = initial_state(ctx, xs, node.attrs, like, lead=1)
    trace.initial[node.id] = xp.broadcast_to(init, like.shape)
    if run.carry is not None and step.offset > 0:
        carried, history = run.carry.read(run.state(node), step.offset, mask, xp)
        if carried is not None:
            trace.carried[node.id] = carried.reshape(carried.shape + (1,) * len(sample))
            trace.history[node.id] = history


def run_forward(loop: Loop, run: RunState) -> None:
    """Run the loop over all time steps. The nodes read after the loop land in `run.values` as
    (T, N, …); the step outputs of all of them stay in the trace for backward."""
    xp = run.xp
    mask = run.masks[loop.axis]
    T = mask.shape[0]
    times = list(range(T)) if loop.direction > 0 else list(range(T - 1, -1, -1))
    inputs = {n.id: densified(run.values[n.id], run.backend, run.dtype) for n in loop.external_inputs()}
    trace = _Trace([_prepare(n, loop, run) for n in loop.nodes], times, inputs)
    outputs = trace.outputs
    for step in trace.steps:
        outputs[step.node.id] = [None] * T
        if step.delay:
            _prepare_delay(run, step, trace, mask)
    for t in times:
        for step in trace.steps:
            node = step.node
            if step.delay:
                source_t = t - step.offset
                y = trace.initial[node.id]
                if 0 <= source_t < T:
                    y = xp.where(trace.valid[node.id][t], outputs[node.inputs[0].id][source_t], y)
                elif source_t < 0 and node.id in trace.carried:
                    y = xp.where(trace.carried[node.id][t], trace.history[node.id][t], y)
            else:
                step.ctx.saved = saved = {}
                y = apply_forward(step.op, step.ctx, _operands(step, t, trace), node.attrs, step.rank)
                if saved:
                    trace.saved[(node.id, t)] = saved
            outputs[node.id][t] = y
    if run.carry is not None:
        for step in trace.steps:
            if step.delay and step.offset > 0:
                k = step.offset
                last = xp.stack(outputs[step.node.inputs[0].id][max(T - k, 0):])
                run.carry.write(run.state(step.node), last, k, trace.history.get(step.node.id), xp)
    for node in loop.nodes:
        if node.id in loop.exported:
            run.values[node.id] = xp.stack(outputs[node.id])
    run.saved[loop] = trace


def run_backward(loop: Loop, run: RunState) -> None:
    """Backpropagation through time: gradients of the loop's inputs from its nodes' gradients.

    Within a step, gradients pass from reader to input in `(N, …)` pieces; only what crosses steps —
    the gradient a delay sends to its input k steps away — and what comes from outside the loop is
    kept per step.
    """
    xp = run.xp
    trace: _Trace = run.saved.pop(loop)
    outputs = trace.outputs
    T = len(trace.times)
    outer = {n.id: run.grads[n.id] for n in loop.nodes if run.grads.get(n.id) is not None}
    crossing = {d.inputs[0].id: [None] * T for d in loop.delays}   # gradients sent across steps
    initial = {}                                       # delay id -> its gradient where it gave its initial state
    per_step: dict[int, list] = {}                     # sequence input id -> [gradient at step t]
    whole: dict[int, Any] = {}                         # static or per-sequence input id -> gradient
    for t in reversed(trace.times):
        within: dict[int, Any] = {}                    # node id -> gradient at step t from readers in step t
        for step in reversed(trace.steps):
            node = step.node
            gy = _add(_add(within.pop(node.id, None), crossing.get(node.id, _NONE)[t]),
                      outer[node.id][t] if node.id in outer else None)
            if gy is None:
                continue
            if step.delay:
                valid = trace.valid[node.id][t]
                source_t = t - step.offset
                if 0 <= source_t < T:
                    sent = crossing[node.inputs[0].id]
                    sent[source_t] = _add(sent[source_t], xp.where(valid, gy, 0))
                if len(node.inputs) > 1:
                    # Steps that read the previous window (truncated BPTT) pass no gradient on.
                    took = valid if node.id not in trace.carried else valid | trace.carried[node.id][t]
                    initial[node.id] = _add(initial.get(node.id), xp.where(took, 0, gy))
                continue
            step.ctx.saved = trace.saved.get((node.id, t), {})
            in_grads = apply_backward(step.op, step.ctx, _operands(step, t, trace), outputs[node.id][t], gy,
                                      node.attrs, step.rank)
            for inp, source, g in zip(node.inputs, step.sources, in_grads):
                if g is None:
                    continue
                if source == LOOP:
                    within[inp.id] = _add(within.get(inp.id), g)
                elif source == STEP:
                    steps = per_step.setdefault(inp.id, [None] * T)
                    steps[t] = _add(steps[t], g)
                elif inp.id in whole:
                    whole[inp.id] += g
                else:
                    whole[inp.id] = g.copy()            # g may be a view of a gradient still in use
    for step in trace.steps:
        if step.node.id in initial:
            _initial_state_gradient(run, step, trace, initial[step.node.id], whole)
    for nid, steps in per_step.items():
        whole[nid] = _stacked(steps, trace.inputs[nid], xp)
    for nid, g in whole.items():
        prev = run.grads.get(nid)
        run.grads[nid] = g if prev is None else prev + g


class _NoGradients:
    def __getitem__(self, t):
        return None


_NONE = _NoGradients()


def _add(a, b):
    """a + b where either may be None (no gradient)."""
    if a is None:
        return b
    return a if b is None else a + b


def _stacked(steps: list, like, xp):
    """Per-step gradients as one (T, N, …) array; steps that got none are 0."""
    out = xp.zeros_like(like)
    for t, g in enumerate(steps):
        if g is not None:
            out[t] = g
    return out


def _initial_state_gradient(run: RunState, step: _NodeStep, trace: _Trace, g_init, whole: dict) -> None:
    """The gradient a delay's initial state received, summed back to the initial-state input."""
    node = step.node
    init = node.inputs[1]
    ctx = run.context(node, {})
    ctx.dyn = [2, dyn_rank(init.layout)]
    g = initial_state_gradient(ctx, [None, trace.inputs[init.id]], g_init[None], lead=2)
    whole[init.id] = _add(whole.get(init.id), g)
