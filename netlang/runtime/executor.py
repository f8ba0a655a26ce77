"""Runs a compiled plan: forward, backward, or both, on the backend's array module.

The executor owns nothing but run-time state: the parameter arrays it is given (views into flat
buffers when a trainer drives it), the per-node persistent state of stateful ops, and an RNG. It
binds input arrays by node name, walks the plan's steps, drops dead values as the plan says, and
accumulates parameter gradients into the given gradient arrays. Recurrent loops are single steps
of the plan, run over time by runtime/recurrence.py.

What `feeds[name]` may be, for an input node `name`:

* an array: `(N, *shape)` for an input without a sequence axis, `(T, N, *shape)` for a sequence
  input (every step real), with the sample axes in run-time order (or flat, `dim` wide);
* `(array, mask)`: a padded sequence input with its `(T, N)` boolean mask of real steps, as
  `StreamBatch.to_padded()` returns it. Inputs on one dynamic axis must have equal masks. In frame
  mode (the network has no sequence operation; inputs are batches) the real steps are packed into
  one batch of frames;
* a sparse input (`SparseInputValue`) may also be given as `SparseRows` (runtime/ops/sparse.py),
  alone or with a mask: `SparseRows(indices, values, offsets, (T, N), sample_shape)` from
  `StreamBatch.padded_csr()`; a dense array works too. `runtime/feeding.py` builds the right one from
  a reader's `StreamBatch`.

After a run, `output_masks[name]` is the `(T, N)` mask of each requested output that is a sequence,
and `sample_counts[name]` says over how many samples each requested output (and the loss) summed:
the real samples of its first input's layout — the labels of a criterion — so a per-sequence label
(an intent) counts sequences and a label per word counts words, as CNTK counts "samples with labels".

`hooks` (a `RunHooks`) hear from a run as it goes: when backward begins, and when a parameter's
gradient is final (written into its destination, no later step adds to it) — in the order backward
finishes them, so a data-parallel trainer can exchange the first gradients while backward computes
the rest.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from netlang.compiler.graph.plan import Plan, make_plan
from netlang.errors import DataError
from netlang.ir.graph import BATCH, Network, Node, SeqAxis, dyn_rank
from netlang.ir.shapes import num_elements, to_runtime
from netlang.ops.registry import OpContext, apply_backward, apply_forward, op_of
from netlang.ops.sparse import SparseRows, densified
from netlang.runtime import carryover as truncation
from netlang.runtime import recurrence
from netlang.runtime.backend import Backend, cpu_backend
from netlang.runtime.feeding import frame_rows
from netlang.runtime.initializers import SeedSequence, initial_value


class RunHooks:
    """What a run tells its caller while it runs (by default: nothing is done with it)."""

    def backward_begins(self) -> None:
        pass

    def gradient_ready(self, name: str) -> None:
        """The gradient of parameter `name` is final and in its destination array."""


def initial_parameters(network: Network, seed: int = 1) -> dict[str, np.ndarray]:
    """Float64 initial values (run-time layout) of every parameter, deterministic per seed."""
    seeds = SeedSequence(seed)
    out = {}
    for node in network.parameters:
        if node.value is not None and node.value.size == int(np.prod(to_runtime(node.shape))):
            out[node.name] = np.asarray(node.value, dtype=np.float64).reshape(to_runtime(node.shape))
        else:
            out[node.name] = initial_value(node.attrs, seeds.rng_for(node.attrs), node.span)
    return out


class Executor:
    def __init__(self, network: Network, backend: Backend | None = None,
                 parameters: Mapping[str, object] | None = None, seed: int = 1):
        self.network = network
        self.backend = backend or cpu_backend()
        self.xp = self.backend.xp
        if parameters is None:
            parameters = {k: self.backend.from_host(v, self.backend.dtype)
                          for k, v in initial_parameters(network, seed).items()}
        self.parameters = dict(parameters)      # name -> array (run-time layout), possibly views
        self.state: dict[int, dict] = {}        # node id -> persistent op state
        self.rng = self.backend.random_stream(seed)   # dropout masks …, drawn on the device
        self.options: dict = {}
        self._plans: dict[tuple, Plan] = {}
        self.output_masks: dict[str, object] = {}
        self.sample_counts: dict[str, int] = {}
        self._carry = None
        self.step_timer = None                  # runtime/timing.StepTimer: times each step (netlang time)

    # ---- planning --------------------------------------------------------------------------------
    def plan(self, outputs: list[Node], loss: Node | None = None, wrt: list[Node] | None = None) -> Plan:
        key = (tuple(n.id for n in outputs), loss.id if loss is not None else None,
               tuple(n.id for n in (wrt or [])))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = make_plan(self.network, outputs, loss, wrt)
        return plan

    # ---- running ---------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, object], outputs: list[Node], *, loss: Node | None = None,
            wrt: list[Node] | None = None, grads: Mapping[str, object] | None = None,
            training: bool = False, accumulate: bool = False, carry=None, hooks: RunHooks | None = None):
        """Forward (and backward when `loss` is given). Returns (output values, gradients by name).

        `grads` supplies destination arrays for parameter gradients (e.g. views of a flat gradient
        buffer); they are overwritten unless `accumulate`. `carry` (runtime/truncation.CarryOver) makes
        the delays continue the sequences of the previous run (truncated BPTT). `hooks`: see the
        module docstring.
        """
        self._carry = carry
        plan = self.plan(outputs, loss, wrt)
        dtype = self.backend.dtype
        values: dict[int, object] = {}
        masks = _Masks()              # (T, N) mask of each sequence axis
        for leaf in plan.leaves:
            values[leaf.id] = self._bind_leaf(leaf, feeds, masks)
        grad_values: dict[int, object] = {}
        saved: dict = {}              # what a forward kernel (or loop) stashed for its own backward
        wrt_nodes = {n.id: n for n in plan.wrt}
        wrt_ids = wrt_nodes.keys()
        counted = {n.id for n in plan.outputs} | ({plan.loss.id} if plan.loss is not None else set())
        self.sample_counts = {}
        run = recurrence.RunState(self.backend, dtype, values, grad_values, masks, saved,
                                  lambda node, stash: self._context(node, training, stash, masks.of(node)),
                                  carry, lambda node: self.state.setdefault(node.id, {}))
        hooks = hooks or _NO_HOOKS
        out_grads: dict = {}
        backward = False
        for step in plan.steps:
            if self.step_timer is not None:
                self.step_timer.begin()
            node = step.node
            if not backward and step.kind in ("backward", "loop_backward"):
                backward = True
                hooks.backward_begins()
            if step.kind == "loop":
                recurrence.run_forward(step.loop, run)
            elif step.kind == "loop_backward":
                recurrence.run_backward(step.loop, run)
            elif step.kind == "forward":
                op = op_of(node)
                ctx = self._context(node, training, saved.setdefault(node.id, {}), masks.of(node))
                xs = self._operands(node, values)
                values[node.id] = apply_forward(op, ctx, xs, node.attrs, len(node.shape))
                masks.made_by(node, ctx)
                if node.id in counted and node.inputs:
                    self.sample_counts[node.name] = _samples_in(node.inputs[0], xs[0], masks)
            else:
                op = op_of(node)
                ctx = self._context(node, training, saved.setdefault(node.id, {}), masks.of(node))
                xs = self._operands(node, values)
                if node.id == plan.loss.id and node.id not in grad_values:
                    grad_values[node.id] = self._loss_seed(values[node.id])
                gy = grad_values.get(node.id)
                if gy is not None:
                    in_grads = apply_backward(op, ctx, xs, values[node.id], gy, node.attrs, len(node.shape))
                    for inp, g in zip(node.inputs, in_grads):
                        if g is None:
                            continue
                        prev = grad_values.get(inp.id)
                        grad_values[inp.id] = g if prev is None else prev + g
            if step.kind == "backward":
                saved.pop(node.id, None)
            for nid in step.release:
                values.pop(nid, None)
            for nid in step.release_grads:
                if nid not in wrt_ids:
                    grad_values.pop(nid, None)
            if self.step_timer is not None:
                self.step_timer.end(step)
            for nid in step.grads_done:
                self._finish_gradient(wrt_nodes[nid], grad_values, grads, accumulate, out_grads, hooks)
        out_values = {n.name: values[n.id] for n in plan.outputs}
        self.output_masks = {n.name: masks.axes[n.layout] for n in plan.outputs
                             if isinstance(n.layout, SeqAxis) and n.layout in masks.axes}
        if plan.loss is not None:
            out_values.setdefault(plan.loss.name, values[plan.loss.id])
        for node in plan.wrt:    # those no backward step reached: a zero gradient
            if node.name not in out_grads:
                self._finish_gradient(node, grad_values, grads, accumulate, out_grads, hooks)
        return out_values, out_grads

    def _loss_seed(self, loss):
        """The gradient backward starts from: 1, or fp16's loss scale (runtime/precision.LossScaler)."""
        seed = self.xp.ones_like(loss)
        scale = self.options.get("lossScale")
        if scale is not None:
            seed *= scale
        return seed

    def _finish_gradient(self, node: Node, grad_values: dict, grads, accumulate: bool, out_grads: dict,
                         hooks: RunHooks) -> None:
        """Put `node`'s final gradient where the caller wants it, and say so."""
        g = grad_values.get(node.id)
        if g is None:
            g = self.xp.zeros(to_runtime(node.shape), dtype=self.backend.dtype)
        if grads is not None and node.name in grads:
            dest = grads[node.name]
            if accumulate:
                dest += g.reshape(dest.shape)
            else:
                dest[...] = g.reshape(dest.shape)
            out_grads[node.name] = dest
        else:
            out_grads[node.name] = g
        hooks.gradient_ready(node.name)

    # ---- persistent node state (precomputed statistics …), for model and checkpoint files ----------
    def state_arrays(self) -> dict:
        """Every node's persistent array state as `node/<name>/<key>` host arrays."""
        arrays = {}
        for node in self.network.nodes:
            for key, value in self.state.get(node.id, {}).items():
                if hasattr(value, "shape") and hasattr(value, "dtype"):
                    arrays[f"node/{node.name}/{key}"] = self.backend.to_host(value)
        return arrays

    def forget_carried(self) -> None:
        """Drop the recurrent state carried across minibatches (truncated BPTT): a new epoch starts afresh."""
        truncation.forget(self.state)

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        for key, value in arrays.items():
            if not key.startswith("node/"):
                continue
            name, _, field_name = key[5:].rpartition("/")
            node = self.network.node(name)
            if node is not None:
                on_device = self.backend.from_host(value, self.backend.dtype) if value.dtype.kind == "f" else value
                self.state.setdefault(node.id, {})[field_name] = on_device

    def _context(self, node: Node, training: bool, saved: dict, mask=None) -> OpContext:
        return OpContext(backend=self.backend, dyn=[dyn_rank(i.layout) for i in node.inputs],
                         out_dyn=dyn_rank(node.layout), training=training, rng=self.rng, mask=mask,
                         state=self.state.setdefault(node.id, {}), saved=saved, node_name=node.name,
                         options=self.options, carry=self._carry if op_of(node).delay else None)

    def _operands(self, node: Node, values: dict) -> list:
        xs = [values[i.id] for i in node.inputs]
        if op_of(node).sparse_operands:
            return xs
        return [densified(x, self.backend, self.backend.dtype) for x in xs]

    def _bind_leaf(self, leaf: Node, feeds: Mapping[str, object], masks: "_Masks"):
        if leaf.is_parameter:
            return self.parameters[leaf.name]
        if leaf.name not in feeds:
            raise DataError(f"no data given for input '{leaf.name}'",
                            hint=f"the inputs of this network are: {', '.join(n.name for n in self.network.inputs)}")
        value, mask = _split_feed(feeds[leaf.name])
        if mask is not None:   # kept on the host: no device reads
            mask = np.asarray(mask if isinstance(mask, np.ndarray) else self.backend.to_host(mask), dtype=bool)
        if isinstance(value, SparseRows):
            return self._bind_sparse(leaf, value, mask, masks)
        array = self.backend.upload(leaf.name, value, self.backend.dtype)
        expected = to_runtime(leaf.shape)
        lead = dyn_rank(leaf.layout)
        if leaf.layout is BATCH and mask is not None:
            # Frame mode: the real steps of all sequences are the batch, sequence after sequence.
            array = array.swapaxes(0, 1)[self.backend.from_host(mask.T)]
        if array.ndim == lead + 1 and array.shape[lead:] != expected and array.shape[-1] == int(np.prod(expected)):
            array = array.reshape(array.shape[:lead] + expected)   # flat reader samples
        if tuple(array.shape[lead:]) != expected:
            raise DataError(f"input '{leaf.name}' expects samples of shape {expected} (row-major), got {array.shape[lead:]}")
        if lead == 2:
            masks.bind(leaf, array.shape[:2], mask, self.backend)
        return array

    def _bind_sparse(self, leaf: Node, rows: SparseRows, mask, masks: "_Masks") -> SparseRows:
        """A sparse feed (host arrays, as the reader makes them) on the device."""
        if leaf.layout is BATCH and mask is not None:
            rows = rows.select(frame_rows(mask), np)
        if rows.row_size != num_elements(leaf.shape):
            raise DataError(f"sparse input '{leaf.name}' has samples of {rows.row_size} elements, "
                            f"the network expects {num_elements(leaf.shape)}")
        if len(rows.lead) != dyn_rank(leaf.layout):
            raise DataError(f"sparse input '{leaf.name}' is laid out over {len(rows.lead)} dynamic axes, "
                            f"the network expects {dyn_rank(leaf.layout)}")
        counts = np.diff(self.backend.to_host(rows.offsets))
        backend, name = self.backend, leaf.name
        # The row of each non-zero is counted here, on the host, so the device never has to.
        nonzero_rows = np.repeat(np.arange(len(counts)), counts)
        rows = SparseRows(backend.upload((name, "indices"), rows.indices),
                          backend.upload((name, "values"), rows.values, backend.dtype),
                          backend.upload((name, "offsets"), rows.offsets), tuple(rows.lead), to_runtime(leaf.shape),
                          most_per_row=int(counts.max()) if counts.size else 0,
                          nonzero_rows=backend.upload((name, "rows"), nonzero_rows))
        if len(rows.lead) == 2:
            masks.bind(leaf, tuple(rows.lead), mask, self.backend)
        return rows


def host_sample_count(network: Network, node: Node, feeds: Mapping[str, object]) -> int | None:
    """What `sample_counts[node.name]` of a run on `feeds` will be, from the host data alone (a
    replayed CUDA graph runs no Python): the real steps of the mask of the input that gives the
    axis of `node`'s first input, or the batch size; None when the inputs do not say (an axis an
    op makes)."""
    first = node.inputs[0] if node.inputs else node
    if first.layout is not BATCH and not isinstance(first.layout, SeqAxis):
        return 1
    for leaf in network.inputs:
        if leaf.layout != first.layout or leaf.name not in feeds:
            continue
        value, mask = _split_feed(feeds[leaf.name])
        if mask is not None:
            return int(np.asarray(mask).sum())
        lead = value.lead if isinstance(value, SparseRows) else np.shape(value)
        return int(np.prod(lead[:2])) if isinstance(first.layout, SeqAxis) else int(lead[0])
    return None


_NO_HOOKS = RunHooks()


def _samples_in(node: Node, value, masks: "_Masks") -> int:
    """The real samples of `node`'s value `value`: steps under its axis' mask, or its batch size."""
    lead = value.lead if isinstance(value, SparseRows) else getattr(value, "shape", ())
    if isinstance(node.layout, SeqAxis):
        count = masks.count(node.layout)
        return count if count is not None else int(np.prod(lead[:2]))
    if node.layout is BATCH:
        return int(lead[0])
    return 1


def _split_feed(feed):
    """(value, mask or None) of one feed (see the module doc for the accepted forms)."""
    if isinstance(feed, tuple) and len(feed) == 2:
        return feed
    return feed, None


class _Masks:
    """The masks of one run: one per sequence axis, given with the inputs or made by an op that
    creates a new axis (Where, Slice on the time axis), which reports it in `ctx.saved["out_mask"]`.

    A kernel's `ctx.mask` is the mask of its output's axis when an input shares that axis, else (a
    per-sequence output, or an op making a new axis) the mask of its first sequence input; it is
    chosen once per node and run, so an op's forward and backward see the same mask.
    """

    def __init__(self):
        self.axes: dict = {}          # SeqAxis -> (T, N) bool, on the device
        self.host: dict = {}          # SeqAxis -> the same mask on the host, for an axis given with the inputs
        self.owner: dict = {}         # SeqAxis -> name of the input that gave the mask
        self.chosen: dict = {}        # node id -> mask for ctx.mask

    def __getitem__(self, axis):
        return self.axes[axis]

    def of(self, node: Node):
        if node.id not in self.chosen:
            axes = [i.layout for i in node.inputs if isinstance(i.layout, SeqAxis)]
            if isinstance(node.layout, SeqAxis) and (node.layout in axes or not axes):
                self.chosen[node.id] = self.axes.get(node.layout)
            else:
                self.chosen[node.id] = self.axes.get(axes[0]) if axes else None
        return self.chosen[node.id]

    def made_by(self, node: Node, ctx: OpContext) -> None:
        if isinstance(node.layout, SeqAxis) and node.layout not in self.axes:
            mask = ctx.saved.pop("out_mask", None)
            if mask is None:
                raise RuntimeError(f"{node.op} '{node.name}' creates the sequence axis '{node.layout}' "
                                   "but reported no mask for it")
            self.axes[node.layout] = mask

    def count(self, axis) -> int | None:
        """The real steps on `axis`: counted on the host when the inputs gave its mask."""
        if axis in self.host:
            return int(self.host[axis].sum())
        mask = self.axes.get(axis)
        return None if mask is None else int(mask.sum())      # an axis an op made: read from the device

    def bind(self, leaf: Node, lead: tuple, mask, backend) -> None:
        """The host mask `mask` (None: every step real) of input `leaf`, whose data has `lead` steps and
        sequences."""
        if mask is None:
            mask = np.ones(tuple(lead), dtype=bool)
        if tuple(mask.shape) != tuple(lead):
            raise DataError(f"input '{leaf.name}': the mask has shape {tuple(mask.shape)}, the data {tuple(lead)} "
                            "(steps, sequences)")
        axis = leaf.layout
        known = self.host.get(axis)
        if known is None:
            self.host[axis], self.owner[axis] = mask, leaf.name
            self.axes[axis] = backend.upload((leaf.name, "mask"), mask)
        elif known.shape != mask.shape or not bool((known == mask).all()):
            raise DataError(f"inputs '{self.owner[axis]}' and '{leaf.name}' share the dynamic axis '{axis}', "
                            "but their sequences have different lengths",
                            hint="a per-sequence input (e.g. an intent label) needs its own axis: "
                                 "Input{…, dynamicAxis=DynamicAxis()}")
