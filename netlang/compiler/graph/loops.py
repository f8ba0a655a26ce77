"""Recurrent loops: the strongly connected components of the graph (Tarjan), checked and ordered.

A recurrent network is a graph with cycles, and every cycle must pass through a delay (PastValue or
FutureValue): the delay's value at step t is its input's value at t-k (or t+k), so a cycle through a
delay is a recurrence over time, not a circular definition. The compiler condenses the graph into
its strongly connected components. A component with a cycle is a `Loop`, run step by step over
time; every other node runs once over all time steps (an LSTM's input projection is one matrix
product over all T·N samples). Tarjan's algorithm emits the components inputs-first, which is
exactly the order of execution, so `execution_units` needs no second sort.

Within a loop, cutting the edges from each delay to its main input leaves an acyclic graph: its
topological order is the order of the loop's nodes within one time step. A cycle that survives the
cut has no delay on it, and is reported naming its nodes. A loop runs forward in time when its
delays are PastValues and backward when they are FutureValues; a loop mixing both has no order in
which its steps could run and is an error as well.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netlang.errors import NetworkError
from netlang.ir.graph import Node, SeqAxis
from netlang.ops.registry import is_delay, op_of


@dataclass(eq=False)
class Loop:
    """A recurrent loop: its nodes in the order they run within one time step, and its direction."""

    nodes: list[Node]
    direction: int                  # +1: t = 0, 1, … (PastValue); -1: t = T-1, …, 0 (FutureValue):
                                    # the `delay` of the loop's delays
    ids: frozenset = field(default_factory=frozenset)
    exported: frozenset = field(default_factory=frozenset)   # ids of nodes read after the loop (set by the plan)

    def __post_init__(self):
        self.ids = frozenset(n.id for n in self.nodes)

    @property
    def delays(self) -> list[Node]:
        """The delays that close the loop (their main input is in the loop)."""
        return [n for n in self.nodes if is_delay(n) and n.inputs[0].id in self.ids]

    @property
    def axis(self) -> SeqAxis:
        return self.delays[0].layout

    def external_inputs(self) -> list[Node]:
        """Nodes outside the loop that the loop reads, each once, in first-use order."""
        seen: set[int] = set()
        out = []
        for node in self.nodes:
            for inp in node.inputs:
                if inp.id not in self.ids and inp.id not in seen:
                    seen.add(inp.id)
                    out.append(inp)
        return out

    def describe(self) -> str:
        kind = "forward (PastValue)" if self.direction > 0 else "backward (FutureValue)"
        return f"loop {kind} over {', '.join(n.name for n in self.nodes)}"


def strongly_connected_components(nodes: list[Node]) -> list[list[Node]]:
    """Tarjan's algorithm, iterative; edges go from a node to its inputs (delay inputs included).

    A component is emitted only after every component it reads from, so the list is in execution
    order. `nodes` must be closed under inputs (every input of a node in `nodes` is in `nodes`).
    """
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[Node] = []
    components: list[list[Node]] = []
    for root in nodes:
        if root.id in index:
            continue
        index[root.id] = low[root.id] = len(index)
        stack.append(root)
        on_stack.add(root.id)
        work = [(root, iter(root.inputs))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child.id not in index:
                    index[child.id] = low[child.id] = len(index)
                    stack.append(child)
                    on_stack.add(child.id)
                    work.append((child, iter(child.inputs)))
                elif child.id in on_stack:
                    low[node.id] = min(low[node.id], index[child.id])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent.id] = min(low[parent.id], low[node.id])
            if low[node.id] == index[node.id]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member.id)
                    component.append(member)
                    if member is node:
                        break
                components.append(component)
    return components


def execution_units(nodes: list[Node]) -> list[Node | Loop]:
    """The nodes, with each recurrent loop condensed into one `Loop`, in execution order."""
    units: list[Node | Loop] = []
    for component in strongly_connected_components(nodes):
        node = component[0]
        if len(component) == 1 and not any(i is node for i in node.inputs):
            units.append(node)
        else:
            units.append(make_loop(component))
    return units


def find_loops(nodes: list[Node]) -> list[Loop]:
    """Every recurrent loop among `nodes` (checked: raises NetworkError for a bad one)."""
    return [u for u in execution_units(nodes) if isinstance(u, Loop)]


def make_loop(component: list[Node]) -> Loop:
    members = {n.id for n in component}
    order = _step_order(component, members)
    delays = [n for n in order if is_delay(n) and n.inputs[0].id in members]
    directions = {op_of(n).delay for n in delays}
    if len(directions) > 1:
        past = next(n for n in delays if op_of(n).delay > 0)
        future = next(n for n in delays if op_of(n).delay < 0)
        raise NetworkError(
            f"a recurrent loop mixes {past.op} '{past.name}' and {future.op} '{future.name}'; "
            f"its nodes: {_names(order)}", future.span or past.span,
            hint="a loop runs either forward or backward in time; split it into two loops")
    for delay in delays:
        if not isinstance(delay.layout, SeqAxis):
            raise NetworkError(f"{delay.op} '{delay.name}' is in a recurrent loop but its input has no "
                               "sequence axis", delay.span,
                               hint="a delay needs a sequence: feed the loop from an Input with a dynamic axis")
    for node in order:
        if op_of(node).whole_sequence:
            raise NetworkError(f"{node.op} '{node.name}' needs the whole sequence, but it is inside a "
                               f"recurrent loop ({_names(order)})", node.span,
                               hint="a loop runs one time step at a time; move the operation out of the loop")
    return Loop(order, next(iter(directions), -1))


def _cut_inputs(node: Node, members: set[int]) -> list[Node]:
    """The inputs of `node` within the component that must run earlier in the same time step."""
    inputs = node.inputs[1:] if is_delay(node) else node.inputs
    return [i for i in inputs if i.id in members]


def _step_order(component: list[Node], members: set[int]) -> list[Node]:
    """Topological order of a component with the delay edges cut (Kahn); a leftover cycle is an error."""
    component = sorted(component, key=lambda n: n.id)       # creation order: stable and readable
    waiting = {n.id: len(set(i.id for i in _cut_inputs(n, members))) for n in component}
    readers: dict[int, list[Node]] = {}
    for node in component:
        for inp in {i.id: i for i in _cut_inputs(node, members)}.values():
            readers.setdefault(inp.id, []).append(node)
    ready = [n for n in component if waiting[n.id] == 0]
    order: list[Node] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for reader in readers.get(node.id, []):
            waiting[reader.id] -= 1
            if waiting[reader.id] == 0:
                ready.append(reader)
    if len(order) < len(component):
        cycle = _cycle_among([n for n in component if waiting[n.id] > 0], members)
        raise NetworkError(f"cycle without PastValue/FutureValue: {' -> '.join(n.name for n in cycle)}",
                           cycle[0].span, hint="a recurrent loop must pass through PastValue or FutureValue")
    return order


def _cycle_among(stuck: list[Node], members: set[int]) -> list[Node]:
    """One delay-free cycle among nodes that Kahn's algorithm could not order, closed (first == last)."""
    stuck_ids = {n.id for n in stuck}
    node = stuck[0]
    path: list[Node] = []
    position: dict[int, int] = {}
    # Every stuck node has a stuck input (else it would have been ordered), so walking inputs must
    # come back to a node already on the path.
    while node.id not in position:
        position[node.id] = len(path)
        path.append(node)
        node = next(i for i in _cut_inputs(node, members) if i.id in stuck_ids)
    cycle = path[position[node.id]:]
    # Walking inputs goes against the data flow; report it in the direction values flow, starting
    # from the node made first (the order the user wrote it in, and the same on every run).
    cycle.reverse()
    start = cycle.index(min(cycle, key=lambda n: n.id))
    cycle = cycle[start:] + cycle[:start]
    return cycle + [cycle[0]]


def _names(nodes: list[Node]) -> str:
    return ", ".join(n.name or n.op for n in nodes)
