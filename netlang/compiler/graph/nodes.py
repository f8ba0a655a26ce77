"""`GraphNodes`: the NodeFactory (compiler/lang/nodes.py) whose operators and constructors make IR nodes.

* operators on node operands (reference §3.4), numbers auto-wrapped as constants;
* `new ComputationNode [ operation = … ; inputs = … ]` through the op registry;
* `new TensorShape [ dims = … ]`, `new BoolVector [ items = … ]`;
* `new ComputationNetwork R` (see `compiler/network.py`).

Node shapes are inferred eagerly when the operands' shapes are known, so a shape error is reported
at the line that builds the offending node and `x.dim` works inside the layer library; whatever
cannot be inferred yet (recurrent loops, parameters inferred later) is finished by validation when
the network is built.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netlang.compiler.graph import leaves, network, shapeinfer
from netlang.compiler.lang import values
from netlang.compiler.lang.nodes import BuildContext, NodeFactory
from netlang.errors import EvalError, NetworkError, suggest
from netlang.grammar.library import STDLIB_PATH
from netlang.ir.graph import BATCH, Node, SeqAxis
from netlang.ops import registry


@dataclass(frozen=True)
class TensorShapeValue:
    """`new TensorShape [dims = …]`: a BrainScript shape (first axis fastest)."""

    dims: tuple

    def __str__(self) -> str:
        return ":".join(str(int(d)) for d in self.dims)


@dataclass(frozen=True)
class BoolVectorValue:
    items: tuple


# ---- values ------------------------------------------------------------------------------------

def _flatten(value) -> list:
    """Flatten nested arrays (C++ consumers flatten, reference §1.2) into a Python list."""
    if isinstance(value, values.Array):
        out = []
        for item in value.items():
            out.extend(_flatten(item))
        return out
    return [value]


def constant_node(number, ctx: BuildContext, name: str) -> Node:
    """Auto-wrap a number (or Bool) met by a node operator: a (1) constant, multiplier 0."""
    value = float(number)
    node = Node("LearnableParameter", [], {"shape": (1,), "init": "fixedValue", "initValue": value},
                name=name, span=ctx.span, shape=(1,))
    node.is_parameter = True
    node.learning_rate_multiplier = 0.0
    node.value = np.full((1,), value)
    return node


def as_node(value, ctx: BuildContext, name: str) -> Node:
    if isinstance(value, Node):
        return value
    if isinstance(value, (bool, float, int)):
        return constant_node(value, ctx, name)
    raise EvalError(f"expected a node or a number, got {type_name(value)}", ctx.span)


def type_name(value) -> str:
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, (int, float)):
        return "Double"
    if isinstance(value, str):
        return "String"
    if isinstance(value, Node):
        return "ComputationNode"
    for cls in ("Record", "Array", "Lambda"):
        if isinstance(value, getattr(values, cls, ())):
            return cls if cls != "Lambda" else "function"
    return type(value).__name__


# ---- node creation -----------------------------------------------------------------------------

def user_span(span):
    """The position to report for a node: where the user's own text led to it. A node made inside
    the standard library takes the innermost call site outside the library."""
    library = str(STDLIB_PATH.parent)
    if span is None or not str(span.file).startswith(library):
        return span
    for call in reversed(values.call_spans):
        if call is not None and not str(call.file).startswith(library):
            return call
    return span


def make_node(op_name: str, inputs: list[Node], attrs: dict, ctx: BuildContext, *,
              name: str | None = None) -> Node:
    ctx = BuildContext(ctx.path, user_span(ctx.span))
    op = registry.get(op_name)
    if op is None:
        known = [o.name for o in registry.all_ops()] + [a for o in registry.all_ops() for a in o.aliases]
        raise NetworkError(f"unknown operation '{op_name}'", ctx.span, hint=suggest(op_name, known, False))
    lo, hi = op.arity
    if len(inputs) < lo or (hi >= 0 and len(inputs) > hi):
        want = f"{lo}" if lo == hi else f"{lo} to {'any' if hi < 0 else hi}"
        raise NetworkError(f"operation '{op.name}' takes {want} inputs, {len(inputs)} given", ctx.span,
                           key=name or ctx.path)
    node = Node(op.name, inputs, attrs, name=name if name is not None else ctx.path, span=ctx.span)
    shapeinfer.infer_eagerly(node)
    return node


_BINARY_OPS = {"+": "Plus", "-": "Minus", ".*": "ElementTimes", "==": "Equal", "!=": "NotEqual",
               "<": "Less", "<=": "LessEqual", ">": "Greater", ">=": "GreaterEqual", "&&": "ElementTimes"}


def binary(op: str, left, right, ctx: BuildContext):
    if op == "&&":
        if left is False or right is False:
            return left  # CNTK quirk: a Bool false short-cuts to the first operand
    if op == "||":
        if left is True or right is True:
            return left
        raise EvalError("operator '||' is not applicable to nodes", ctx.span)
    if op == "*":
        if isinstance(left, Node) and isinstance(right, Node):
            return _op_node("Times", [left, right], {}, ctx)   # outputRank, inferInputRankToMap: the defaults
        return _op_node("ElementTimes", [left, right], {}, ctx)
    if op == "/":
        if isinstance(right, Node):
            if isinstance(left, Node) or float(left) != 1.0:
                raise EvalError("division by a node is only defined as 1/node (Reciprocal)", ctx.span,
                                hint="use ElementDivide(a, b) for elementwise division of two nodes")
            return make_node("Reciprocal", [right], {}, ctx)
        if isinstance(right, bool):
            raise EvalError("cannot divide a node by a Bool", ctx.span)
        return _op_node("ElementTimes", [left, 1.0 / float(right)], {}, ctx)
    opname = _BINARY_OPS.get(op)
    if opname is None:
        raise EvalError(f"operator '{op}' is not applicable to nodes", ctx.span)
    return _op_node(opname, [left, right], {}, ctx)


def _op_node(opname: str, operands: list, attrs: dict, ctx: BuildContext) -> Node:
    inputs = [as_node(v, ctx, f"{ctx.path}.{opname}Args[{i}]") for i, v in enumerate(operands)]
    return make_node(opname, inputs, attrs, ctx)


def unary(op: str, operand, ctx: BuildContext):
    if op == "+":
        return operand
    if op == "-":
        return make_node("Negate", [operand], {}, ctx)
    if op == "!":
        return _op_node("Minus", [1.0, operand], {}, ctx)
    raise EvalError(f"operator '{op}' is not applicable to nodes", ctx.span)


def if_node(cond, then_value, else_value, ctx: BuildContext):
    return _op_node("If", [cond, then_value, else_value], {}, ctx)


def node_member(node: Node, name: str, ctx: BuildContext):
    if name == "name":
        return node.name
    if name == "operation":
        return node.op
    if name == "dim":
        if not node.shape_known():
            raise EvalError(f"the dimension of node '{node.name}' is not known yet", ctx.span,
                            hint="give the dimension explicitly (e.g. inputDim=…) or use it after validation")
        return float(node.dim)
    if name == "dims":
        return values.Array.from_values([float(d) for d in node.shape])
    if name == "shape":
        return TensorShapeValue(node.shape)
    if name == "inputs":
        return values.Array.from_values(list(node.inputs))
    raise EvalError(f"a node has no member '{name}'", ctx.span,
                    hint="nodes have: name, operation, dim, dims, inputs")


# ---- `new …` constructors ----------------------------------------------------------------------

def convert_attr(value):
    """A BrainScript value as an op attribute: numbers, bools, strings, shapes as tuples."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        f = float(value)
        return int(f) if f.is_integer() else f
    if isinstance(value, TensorShapeValue):
        return tuple(value.dims)
    if isinstance(value, BoolVectorValue):
        return tuple(value.items)
    if value is values.NONE:
        return None
    if isinstance(value, values.Array):
        return tuple(convert_attr(v) for v in _flatten(value))
    return value


def _record_attrs(record, exclude=("operation", "inputs", "tag"), only: tuple | None = None) -> dict:
    """The attributes a C++ constructor would read: the record's members, then (CNTK's
    "plus the function args" idiom) plain values of the enclosing function-argument scope.
    `only` limits the function arguments read to those names (a delay must not force its input)."""
    attrs = {}
    for name in record.names():
        if name in exclude:
            continue
        attrs[name] = record.get(name)
    for name, thunk in values.enclosing_argument_thunks(record):
        if name in attrs or name in exclude or (only is not None and name not in only):
            continue
        try:
            attrs[name] = thunk.force()
        except EvalError:
            # An argument that cannot be evaluated now (e.g. the input of a PastValue inside its
            # own loop) is not a plain attribute value; the operation reads its inputs separately.
            continue
    out = {}
    for name, value in attrs.items():
        if isinstance(value, Node) or isinstance(value, values.Lambda) or isinstance(value, values.Record):
            continue
        if isinstance(value, values.Array) and any(isinstance(v, Node) for v in _flatten(value)):
            continue
        out[name] = convert_attr(value)
    return out


def _lookup(record, name, default=None):
    value = record.find(name)
    return default if value is None else value


def new_computation_node(record, ctx: BuildContext):
    operation = _lookup(record, "operation")
    if not isinstance(operation, str):
        raise EvalError("new ComputationNode needs a string 'operation'", ctx.span)
    op = registry.get(operation)
    if op is not None and op.delay:
        return new_delay_node(record, op, ctx)
    raw_inputs = record.get("inputs") if record.has("inputs") else None
    inputs = [] if raw_inputs is None else _flatten(raw_inputs)
    inputs = [as_node(v, ctx, f"{ctx.path}.inputs[{i}]") for i, v in enumerate(inputs)]
    attrs = _record_attrs(record)
    tag = _lookup(record, "tag", "")
    if op is not None and op.leaf:
        node = leaves.build_leaf(op, attrs, BuildContext(ctx.path, user_span(ctx.span)))
    else:
        # A primitive with a time-axis form acts on the time axis when given axis < 0 (CNTK writes
        # Slice(…, axis=-1)).
        on_time_axis = op is not None and op.time_axis_form and _on_time_axis(attrs)
        node = make_node(op.time_axis_form if on_time_axis else operation, inputs, attrs, ctx)
    leaves.apply_tag(node, tag, ctx)
    return node


# ---- recurrence: delays attach their input late (reference §3.2) -------------------------------

def _on_time_axis(attrs: dict) -> bool:
    axis = attrs.get("axis")
    return isinstance(axis, (int, float)) and not isinstance(axis, bool) and axis < 0


def new_delay_node(record, op: registry.OpDef, ctx: BuildContext) -> Node:
    """PastValue/FutureValue: the node exists before its input, which closes a loop through it.

    Its shape comes from the declared dims (0: inferred later) and its layout is provisionally
    BATCH, which combines with any sequence axis; validation gives it its input's layout. The
    `inputs` thunk is forced when the network is assembled (`network._attach_late_inputs`). Of the
    enclosing function's arguments it reads only its signature's attributes: forcing its input (or
    initial state) now would re-enter the loop being defined.
    """
    operation = op.name
    ctx = BuildContext(ctx.path, user_span(ctx.span))
    attrs = _record_attrs(record, only=op.signature.spellings)
    shape = op.signature.value(attrs, "shape") or ()
    shape = (int(shape),) if isinstance(shape, (int, float)) else tuple(shape or ())
    known = bool(shape) and all(d > 0 for d in shape)
    node = Node(operation, [], attrs, name=ctx.path, span=ctx.span, shape=shape if known else (),
                layout=BATCH)
    thunk = record.thunk_of("inputs") if record.has("inputs") else None

    def attach() -> list[Node]:
        if thunk is None:
            raise NetworkError(f"{operation} needs an input", ctx.span, key=ctx.path)
        items = _flatten(thunk.force())
        if not 1 <= len(items) <= 2:
            raise NetworkError(f"{operation} takes an input and an optional initial state, "
                               f"{len(items)} inputs given", ctx.span, key=ctx.path)
        return [as_node(v, ctx, f"{ctx.path}.inputs[{i}]") for i, v in enumerate(items)]

    node.late_inputs = attach
    leaves.apply_tag(node, _lookup(record, "tag", ""), ctx)
    return node


def new_tensor_shape(record, ctx: BuildContext):
    dims = _lookup(record, "dims")
    if dims is None:
        raise EvalError("new TensorShape needs 'dims'", ctx.span)
    flat = [convert_attr(d) for d in _flatten(dims)]
    for d in flat:
        if not isinstance(d, int) or d < 0:
            raise EvalError(f"tensor dimensions must be non-negative integers, got {d}", ctx.span)
    return TensorShapeValue(tuple(flat))


def new_bool_vector(record, ctx: BuildContext):
    items = _lookup(record, "items")
    return BoolVectorValue(tuple(bool(v) for v in _flatten(items)))


def new_computation_network(record, ctx: BuildContext):
    return network.build_network(record, ctx)


def dynamic_axis(record, ctx: BuildContext):
    return SeqAxis(ctx.path or "dynamicAxis")


def name_member_value(value, path: str):
    """A node that a member's own evaluation created (its name lies below the member's path) takes
    the member's name, as CNTK names nodes by the member they are bound to."""
    if path and isinstance(value, Node) and value.name.startswith(path + "."):
        value.name = path
    return value


_CONSTRUCTORS = {
    "ComputationNode": new_computation_node,
    "TensorShape": new_tensor_shape,
    "BoolVector": new_bool_vector,
    "ComputationNetwork": new_computation_network,
    "ComputationNetworkFromFile": network.load_network,
    "DynamicAxis": dynamic_axis,
}


class GraphNodes(NodeFactory):
    """Network nodes for the evaluator: operators on nodes, node members and `new T R` make IR nodes."""

    def is_node(self, value) -> bool:
        return isinstance(value, Node)

    def binary(self, op, left, right, ctx):
        return binary(op, left, right, ctx)

    def unary(self, op, operand, ctx):
        return unary(op, operand, ctx)

    def if_node(self, cond, then_value, else_value, ctx):
        return if_node(cond, then_value, else_value, ctx)

    def member(self, node, name, ctx):
        return node_member(node, name, ctx)

    def constructors(self) -> dict:
        return _CONSTRUCTORS

    def name_member_value(self, value, path):
        return name_member_value(value, path)


GRAPH_NODES = GraphNodes()
