"""The executable plan: forward steps, reverse-mode gradient steps and buffer lifetimes.

`make_plan` is the compiler pass pipeline after validation: it selects the nodes the requested
outputs need, derives the backward steps from the ops' gradient rules (autodiff over the IR — the
gradient is part of the plan, not a separate graph walk at run time), and computes for every step
which values and gradients are dead afterwards so the executor can drop them at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netlang.compiler.ir import Network, Node, dyn_rank, is_delay
from netlang.runtime.ops import registry


@dataclass(frozen=True)
class Step:
    kind: str            # "forward" | "backward"
    node: Node
    release: tuple = ()  # node ids whose forward values die after this step
    release_grads: tuple = ()


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
            lines.append(f"{s.kind:8s} {s.node.name} ({s.node.op}){extra}")
        return "\n".join(lines)


def needed_nodes(network: Network, roots: list[Node]) -> list[Node]:
    """Nodes of `network` (topological order) that the roots depend on."""
    want: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node.id in want:
            continue
        want.add(node.id)
        stack.extend(node.inputs)
    return [n for n in network.nodes if n.id in want]


def _requires_grad(nodes: list[Node], wrt: set[int]) -> set[int]:
    req: set[int] = set()
    for node in nodes:
        if node.id in wrt:
            req.add(node.id)
            continue
        op = registry.get(node.op)
        if op.leaf or not op.differentiable:
            continue
        if any(i.id in req for i in node.inputs):
            req.add(node.id)
    return req


def make_plan(network: Network, outputs: list[Node], loss: Node | None = None,
              wrt: list[Node] | None = None) -> Plan:
    wrt = list(wrt or [])
    roots = list(outputs) + ([loss] if loss is not None else [])
    nodes = needed_nodes(network, roots)
    if any(is_delay(n) for n in nodes):
        raise NotImplementedError("recurrent loops are executed by the sequence engine")
    plan = Plan(network=network, outputs=list(outputs), loss=loss, wrt=wrt)
    plan.leaves = [n for n in nodes if registry.get(n.op).leaf]
    compute = [n for n in nodes if not registry.get(n.op).leaf]
    steps: list[tuple[str, Node]] = [("forward", n) for n in compute]

    backward_nodes: list[Node] = []
    if loss is not None:
        req = _requires_grad(nodes, {n.id for n in wrt})
        # Only nodes between a wrt-node and the loss propagate gradient.
        toward_loss = {n.id for n in needed_nodes(network, [loss])}
        backward_nodes = [n for n in reversed(compute) if n.id in req and n.id in toward_loss]
        steps += [("backward", n) for n in backward_nodes]

    plan.steps = _with_lifetimes(steps, set(n.id for n in outputs) | ({loss.id} if loss else set()),
                                 {n.id for n in plan.leaves})
    return plan


def _with_lifetimes(steps: list[tuple[str, Node]], keep: set[int], leaves: set[int]) -> list[Step]:
    """Attach to each step the values (and gradients) that are not used by any later step."""
    last_use: dict[int, int] = {}
    last_grad_use: dict[int, int] = {}
    for index, (kind, node) in enumerate(steps):
        if kind == "forward":
            for i in node.inputs:
                last_use[i.id] = index
            last_use.setdefault(node.id, index)
        else:
            # A gradient rule may read the node's inputs and output, and its own incoming gradient.
            for i in node.inputs:
                last_use[i.id] = index
                last_grad_use[i.id] = max(last_grad_use.get(i.id, -1), index)
            last_use[node.id] = index
            last_grad_use[node.id] = index
    dies: dict[int, list[int]] = {}
    for nid, index in last_use.items():
        if nid not in keep and nid not in leaves:
            dies.setdefault(index, []).append(nid)
    grad_dies: dict[int, list[int]] = {}
    for nid, index in last_grad_use.items():
        if nid not in leaves:
            grad_dies.setdefault(index, []).append(nid)
    return [Step(kind, node, tuple(dies.get(i, ())), tuple(grad_dies.get(i, ())))
            for i, (kind, node) in enumerate(steps)]
