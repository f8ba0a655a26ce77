"""The graph IR: Nodes (op, inputs, attributes, name, span, shape, layout, tags) and Networks.

A Node is created by the evaluator (through `compiler/builtins.py`) when a BrainScript expression
builds a computation: its `op` names an OpDef of the registry, its `shape` is the BrainScript sample
shape (first axis fastest; 0 = not yet inferred) and its `layout` the dynamic axes it carries:

* `None`       a static value (parameter, constant, a criterion's sum);
* `BATCH`      one sample per minibatch entry (`[N, ...]` at run time);
* a `SeqAxis`  sequences × batch (`[T, N, ...]` plus a mask); `DEFAULT_SEQ` is CNTK's default `*` axis.

Inputs default to the sequence axis as in CNTK; a network without recurrence or sequence operations
runs in frame mode, where the validation pass lowers sequence layouts to BATCH.

A Network is the result of `new ComputationNetwork R`: its nodes in topological order plus the
special groups (features, labels, criteria, evaluations, outputs).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from netlang.errors import Span
from netlang.ir.shapes import format_shape, num_elements

TAG_GROUPS = ("feature", "label", "criterion", "evaluation", "output")
LEGACY_TAGS = {"criteria": "criterion", "eval": "evaluation", "evaluation": "evaluation"}


@dataclass(frozen=True)
class SeqAxis:
    """A named dynamic sequence axis (CNTK `DynamicAxis()`); sequences × batch at run time."""

    name: str

    def __str__(self) -> str:
        return self.name


class _Batch:
    def __repr__(self) -> str:
        return "BATCH"

    def __str__(self) -> str:
        return "#"


BATCH = _Batch()
DEFAULT_SEQ = SeqAxis("*")


def dyn_rank(layout) -> int:
    """Number of leading dynamic array axes of a value with this layout."""
    if layout is None:
        return 0
    return 1 if layout is BATCH else 2


def layout_suffix(layout) -> str:
    if layout is None:
        return ""
    return " x #" if layout is BATCH else f" x {layout.name}"


_ids = itertools.count()

# Node names are expression paths (`model.conv1.W`, `out.h1.PlusArgs[0]`, `ce_1`): identifiers joined
# by '.', and array indices, with `_N` added to make a name unique. Nothing else is a node name, so
# none can hold a path separator.
_INDEX = r"\[-?\d+\](?:_\d+)*"
_NODE_NAME = re.compile(rf"(?:[A-Za-z_]\w*|{_INDEX})(?:\.[A-Za-z_]\w*|{_INDEX})*", re.ASCII)
MAX_NODE_NAME = 1000


def is_node_name(name) -> bool:
    """Whether `name` is a node name netlang can make (what a model file may hold)."""
    return isinstance(name, str) and len(name) <= MAX_NODE_NAME and _NODE_NAME.fullmatch(name) is not None


class Node:
    """One operation in the graph. Identity matters (nodes are shared by reference)."""

    __slots__ = ("id", "op", "inputs", "attrs", "name", "span", "shape", "layout", "tags",
                 "late_inputs", "value", "learning_rate_multiplier", "is_parameter", "__weakref__")

    def __init__(self, op: str, inputs: list["Node"], attrs: dict | None = None, *,
                 name: str = "", span: Span | None = None, shape: tuple = (), layout=None,
                 tags: set[str] | None = None):
        self.id = next(_ids)
        self.op = op
        self.inputs = list(inputs)
        self.attrs = dict(attrs or {})
        self.name = name
        self.span = span
        self.shape = tuple(shape)
        self.layout = layout
        self.tags = set(tags or ())
        # PastValue/FutureValue attach their inputs after construction (reference §3.2).
        self.late_inputs: Callable[[], list["Node"]] | None = None
        self.value = None                      # initial value of a parameter/constant (numpy, BS order handled by init)
        self.learning_rate_multiplier = 0.0
        self.is_parameter = False

    # -- what the language sees of a node (reference §3.6: name, operation, dim, inputs) ------------
    @property
    def dim(self) -> int:
        return num_elements(self.shape)

    def shape_known(self) -> bool:
        return bool(self.shape) and all(d > 0 for d in self.shape)

    def describe(self) -> str:
        return f"{self.name or '<unnamed>'} ({self.op}) : {format_shape(self.shape, layout_suffix(self.layout))}"

    def __repr__(self) -> str:
        return f"Node({self.describe()})"


@dataclass
class Network:
    """A validated network: every node's shape and layout known, nodes in topological order."""

    nodes: list[Node]
    groups: dict[str, list[Node]] = field(default_factory=lambda: {g: [] for g in TAG_GROUPS})
    span: Span | None = None
    record: Any = None                     # the BrainScript record it was built from

    @property
    def parameters(self) -> list[Node]:
        return [n for n in self.nodes if n.is_parameter]

    @property
    def learnable_parameters(self) -> list[Node]:
        return [n for n in self.nodes if n.is_parameter and n.learning_rate_multiplier > 0]

    @property
    def inputs(self) -> list[Node]:
        """The values bound from data: nodes that read no other node and are not parameters."""
        return [n for n in self.nodes if is_input(n)]

    def node(self, name: str) -> Node | None:
        for n in self.nodes:
            if n.name == name:
                return n
        return None

    def trained_parameters(self, criterion: Node | None = None) -> list[Node]:
        """The learnable parameters training updates: those the criterion depends on (by default the
        first criterion node), as CNTK's SGD finds them; all learnable ones without a criterion."""
        if criterion is None:
            criterion = next(iter(self.groups.get("criterion", [])), None)
        if criterion is None:
            return self.learnable_parameters
        reached = {node.id for node in depth_first([criterion])}
        return [p for p in self.learnable_parameters if p.id in reached]

    @property
    def unused_parameters(self) -> list[Node]:
        """Learnable parameters the criterion does not depend on (CNTK neither counts nor trains them)."""
        trained = {p.id for p in self.trained_parameters()}
        return [p for p in self.learnable_parameters if p.id not in trained]

    def parameter_count(self, learnable_only: bool = True) -> int:
        """CNTK's count: the values of the parameters the criterion trains (all parameters' values
        with `learnable_only=False`)."""
        params = self.trained_parameters() if learnable_only else self.parameters
        return sum(p.dim for p in params)


def is_input(node: Node) -> bool:
    """An input (InputValue, SparseInputValue) is the one kind of node that reads no other node and
    is not a parameter: the executor binds it by name from the feeds."""
    return not node.inputs and not node.is_parameter


def depth_first(roots: list[Node], inputs_of: Callable[[Node], list[Node]] = lambda node: node.inputs, *,
                acyclic: bool = False, deferred_of: Callable[[Node], list[Node]] | None = None) -> list[Node]:
    """The nodes reachable from `roots` through `inputs_of`, each once, every node after the nodes it
    reaches (post-order; iterative, so deep graphs do not exhaust the stack).

    `inputs_of(node)` is asked once per node, when the walk enters it, so it may attach inputs first.
    With `acyclic`, meeting a node that is still being entered raises CycleError (else the edge is
    ignored: reachability in a graph whose cycles pass through delays). `deferred_of(node)` names
    nodes that become roots of their own once `node` is done (a delay's loop-closing input).
    """
    order: list[Node] = []
    state: dict[int, int] = {}  # 1 = on the path, 2 = done
    pending = list(reversed(roots))
    while pending:
        root = pending.pop()
        if root.id in state:
            continue
        state[root.id] = 1
        path = [(root, iter(inputs_of(root)))]
        while path:
            node, inputs = path[-1]
            nxt = next(inputs, None)
            if nxt is None:
                path.pop()
                state[node.id] = 2
                order.append(node)
                if deferred_of is not None:
                    pending.extend(extra for extra in deferred_of(node) if extra.id not in state)
                continue
            seen = state.get(nxt.id)
            if seen is None:
                state[nxt.id] = 1
                path.append((nxt, iter(inputs_of(nxt))))
            elif seen == 1 and acyclic:
                raise CycleError(nxt, [n for n, _ in path])
    return order


class CycleError(Exception):
    """A cycle that does not pass through PastValue/FutureValue."""

    def __init__(self, node: Node, stack: list[Node]):
        names = [n.name for n in stack]
        if node.name in names:
            names = names[names.index(node.name):]
        super().__init__(" -> ".join(names + [node.name]))
        self.node = node
        self.cycle = names
