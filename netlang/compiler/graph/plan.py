"""The executable plan: forward steps, reverse-mode gradient steps and buffer lifetimes.

`make_plan` is the compiler pass pipeline after validation: it selects the nodes the requested
outputs need, derives the backward steps from the ops' gradient rules (autodiff over the IR — the
gradient is part of the plan, not a separate graph walk at run time), and computes for every step
which values and gradients are dead afterwards so the executor can drop them at once.

Recurrent loops (compiler/loops.py) are single steps: `loop` runs the loop's nodes step by step over
time, `loop_backward` is its backpropagation through time (runtime/recurrence.py). Everything outside
a loop runs once over all time steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netlang.compiler.graph.loops import Loop, execution_units
from netlang.ir.graph import Network, Node, depth_first
from netlang.ops import registry


@dataclass(frozen=True)
class Step:
    kind: str            # "forward" | "backward" | "loop" | "loop_backward"
    node: Node           # for loop steps: the loop's first node
    release: tuple = ()  # node ids whose forward values die after this step
    release_grads: tuple = ()
    loop: Loop | None = None
    grads_done: tuple = ()   # ids of `wrt` nodes whose gradient is complete after this step


@dataclass
class Plan:
    network: Network
    outputs: list[Node]
    loss: Node | None
    wrt: list[Node]                       # nodes whose gradients are returned (parameters …)
    steps: list[Step] = field(default_factory=list)
    leaves: list[Node] = field(default_factory=list)

    def describe(self) -> str:
        lines = []
        for s in self.steps:
            extra = f"  free {len(s.release)}" if s.release else ""
            what = s.loop.describe() if s.loop is not None else f"{s.node.name} ({s.node.op})"
            lines.append(f"{s.kind:8s} {what}{extra}")
        return "\n".join(lines)


def needed_nodes(network: Network, roots: list[Node]) -> list[Node]:
    """Nodes of `network` (topological order) that the roots depend on."""
    want = {n.id for n in depth_first(roots)}
    return [n for n in network.nodes if n.id in want]


def _requires_grad(nodes: list[Node], wrt: set[int]) -> set[int]:
    req: set[int] = set(n.id for n in nodes if n.id in wrt)
    # Repeated until nothing changes: in a recurrent loop a node may read a later one (a delay).
    changed = True
    while changed:
        changed = False
        for node in nodes:
            if node.id in req:
                continue
            op = registry.get(node.op)
            if op.leaf or not op.differentiable:
                continue
            if any(i.id in req for i in node.inputs):
                req.add(node.id)
                changed = True
    return req


def make_plan(network: Network, outputs: list[Node], loss: Node | None = None,
              wrt: list[Node] | None = None) -> Plan:
    wrt = list(wrt or [])
    roots = list(outputs) + ([loss] if loss is not None else [])
    nodes = needed_nodes(network, roots)
    plan = Plan(network=network, outputs=list(outputs), loss=loss, wrt=wrt)
    plan.leaves = [n for n in nodes if registry.get(n.op).leaf]
    units = [u for u in execution_units(nodes) if isinstance(u, Loop) or not registry.get(u.op).leaf]
    _mark_exported(units, nodes, {n.id for n in roots})
    steps: list[tuple[str, Node | Loop]] = [("loop" if isinstance(u, Loop) else "forward", u) for u in units]

    if loss is not None:
        req = _requires_grad(nodes, {n.id for n in wrt})
        # Only nodes between a wrt-node and the loss propagate gradient.
        toward_loss = {n.id for n in needed_nodes(network, [loss])}
        for unit in reversed(units):
            members = unit.nodes if isinstance(unit, Loop) else [unit]
            if any(n.id in req and n.id in toward_loss for n in members):
                steps.append(("loop_backward" if isinstance(unit, Loop) else "backward", unit))

    plan.steps = _with_lifetimes(steps, set(n.id for n in outputs) | ({loss.id} if loss else set()),
                                 {n.id for n in plan.leaves}, {n.id for n in wrt})
    return plan


def _mark_exported(units: list, nodes: list[Node], roots: set[int]) -> None:
    """Tell each loop which of its nodes are read after it (only those become whole sequences)."""
    for loop in (u for u in units if isinstance(u, Loop)):
        read = {i.id for n in nodes if n.id not in loop.ids for i in n.inputs}
        loop.exported = frozenset(nid for nid in loop.ids if nid in read or nid in roots)


def _touches(kind: str, unit: Node | Loop) -> tuple[list[Node], list[Node], list[Node]]:
    """(values read, values made, gradients read or written) by one step."""
    if isinstance(unit, Loop):
        inputs, made = unit.external_inputs(), unit.nodes
    else:
        inputs, made = unit.inputs, [unit]
    if kind in ("forward", "loop"):
        return inputs, made, []
    # A gradient rule may read the node's inputs and output, and its own incoming gradient.
    return inputs + made, [], inputs + made


def _with_lifetimes(steps: list[tuple[str, Node | Loop]], keep: set[int], leaves: set[int],
                    wrt: set[int]) -> list[Step]:
    """Attach to each step the values (and gradients) that are not used by any later step, and the
    `wrt` gradients no later step adds to (a trainer exchanges those while backward goes on)."""
    last_use: dict[int, int] = {}
    last_grad_use: dict[int, int] = {}
    for index, (kind, unit) in enumerate(steps):
        reads, made, grads = _touches(kind, unit)
        for n in reads:
            last_use[n.id] = index
        for n in made:
            last_use.setdefault(n.id, index)
        for n in grads:
            last_grad_use[n.id] = index
    dies: dict[int, list[int]] = {}
    for nid, index in last_use.items():
        if nid not in keep and nid not in leaves:
            dies.setdefault(index, []).append(nid)
    grad_dies: dict[int, list[int]] = {}
    grads_done: dict[int, list[int]] = {}
    for nid, index in last_grad_use.items():
        if nid not in leaves:
            grad_dies.setdefault(index, []).append(nid)
        if nid in wrt:
            grads_done.setdefault(index, []).append(nid)
    out = []
    for i, (kind, unit) in enumerate(steps):
        loop = unit if isinstance(unit, Loop) else None
        node = unit.nodes[0] if loop is not None else unit
        out.append(Step(kind, node, tuple(dies.get(i, ())), tuple(grad_dies.get(i, ())), loop,
                        tuple(grads_done.get(i, ()))))
    return out
