"""Runs a compiled plan: forward, backward, or both, on the backend's array module.

The executor owns nothing but run-time state: the parameter arrays it is given (views into flat
buffers when a trainer drives it), the per-node persistent state of stateful ops, and an RNG. It
binds input arrays by node name, walks the plan's steps, drops dead values as the plan says, and
accumulates parameter gradients into the given gradient arrays.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from netlang.compiler.ir import Network, Node, dyn_rank
from netlang.compiler.plan import Plan, make_plan
from netlang.compiler.shapes import to_runtime
from netlang.errors import DataError
from netlang.runtime.backend import Backend, select_backend
from netlang.runtime.initializers import SeedSequence, initial_value
from netlang.runtime.ops import registry
from netlang.runtime.ops.registry import OpContext, apply_backward, apply_forward


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
        self.backend = backend or select_backend("cpu", "float")
        self.xp = self.backend.xp
        if parameters is None:
            parameters = {k: self.backend.asarray(v) for k, v in initial_parameters(network, seed).items()}
        self.parameters = dict(parameters)      # name -> array (run-time layout), possibly views
        self.state: dict[int, dict] = {}        # node id -> persistent op state
        self.rng = np.random.default_rng(seed)
        self.options: dict = {}
        self._plans: dict[tuple, Plan] = {}

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
            training: bool = False, accumulate: bool = False):
        """Forward (and backward when `loss` is given). Returns (output values, gradients by name).

        `grads` supplies destination arrays for parameter gradients (e.g. views of a flat gradient
        buffer); they are overwritten unless `accumulate`.
        """
        plan = self.plan(outputs, loss, wrt)
        xp = self.xp
        values: dict[int, object] = {}
        for leaf in plan.leaves:
            values[leaf.id] = self._bind_leaf(leaf, feeds)
        grad_values: dict[int, object] = {}
        saved: dict[int, dict] = {}   # what a forward kernel stashed for its own backward
        wrt_ids = {n.id for n in plan.wrt}
        for step in plan.steps:
            node = step.node
            op = registry.get(node.op)
            ctx = self._context(node, training, saved.setdefault(node.id, {}))
            xs = [values[i.id] for i in node.inputs]
            if step.kind == "forward":
                values[node.id] = apply_forward(op, ctx, xs, node.attrs, len(node.shape))
            else:
                if node.id == plan.loss.id and node.id not in grad_values:
                    grad_values[node.id] = xp.ones_like(values[node.id])
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
        out_values = {n.name: values[n.id] for n in plan.outputs}
        if plan.loss is not None:
            out_values.setdefault(plan.loss.name, values[plan.loss.id])
        out_grads = {}
        for node in plan.wrt:
            g = grad_values.get(node.id)
            if g is None:
                g = xp.zeros(to_runtime(node.shape), dtype=self.backend.dtype)
            if grads is not None and node.name in grads:
                dest = grads[node.name]
                if accumulate:
                    dest += g.reshape(dest.shape)
                else:
                    dest[...] = g.reshape(dest.shape)
                out_grads[node.name] = dest
            else:
                out_grads[node.name] = g
        return out_values, out_grads

    # ---- persistent node state (precomputed statistics …), for model and checkpoint files ----------
    def state_arrays(self) -> dict:
        """Every node's persistent array state as `node/<name>/<key>` host arrays."""
        arrays = {}
        for node in self.network.nodes:
            for key, value in self.state.get(node.id, {}).items():
                if hasattr(value, "shape") and hasattr(value, "dtype"):
                    arrays[f"node/{node.name}/{key}"] = self.backend.to_numpy(value)
        return arrays

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        for key, value in arrays.items():
            if not key.startswith("node/"):
                continue
            name, _, field_name = key[5:].rpartition("/")
            node = self.network.node(name)
            if node is not None:
                on_device = self.backend.asarray(value) if value.dtype.kind == "f" else value
                self.state.setdefault(node.id, {})[field_name] = on_device

    def _context(self, node: Node, training: bool, saved: dict) -> OpContext:
        return OpContext(xp=self.xp, dyn=[dyn_rank(i.layout) for i in node.inputs], out_dyn=dyn_rank(node.layout),
                         training=training, rng=self.rng, state=self.state.setdefault(node.id, {}),
                         saved=saved, node_name=node.name, options=self.options)

    def _bind_leaf(self, leaf: Node, feeds: Mapping[str, object]):
        if leaf.is_parameter:
            return self.parameters[leaf.name]
        if leaf.name not in feeds:
            raise DataError(f"no data given for input '{leaf.name}'",
                            hint=f"the inputs of this network are: {', '.join(n.name for n in self.network.inputs)}")
        array = self.xp.asarray(feeds[leaf.name], dtype=self.backend.dtype)
        expected = to_runtime(leaf.shape)
        lead = dyn_rank(leaf.layout)
        if array.ndim == lead + 1 and array.shape[lead:] != expected and array.shape[-1] == int(np.prod(expected)):
            array = array.reshape(array.shape[:lead] + expected)   # flat reader samples
        if tuple(array.shape[lead:]) != expected:
            raise DataError(f"input '{leaf.name}' expects samples of shape {expected} (row-major), got {array.shape[lead:]}")
        return array
