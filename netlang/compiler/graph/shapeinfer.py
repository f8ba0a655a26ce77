"""Shape and layout inference: applies each op's shape rule, fills inferred (0) dimensions.

Used twice: eagerly when a node is built (so errors point at the user's line and `x.dim` works), and
by network validation, which repeats the rules until nothing changes (loops through PastValue need
that) and then insists that every dimension is known.
"""
from __future__ import annotations

from netlang.errors import NetworkError
from netlang.ir.graph import BATCH, Node, SeqAxis
from netlang.ir.shapes import format_shape
from netlang.ops import registry
from netlang.ops.registry import ShapeMismatch, ShapeResult


def _known(shape: tuple) -> bool:
    return bool(shape) and all(d > 0 for d in shape)


def describe_operands(node: Node) -> str:
    return ", ".join(f"'{i.name}' {format_shape(i.shape)}" for i in node.inputs)


def shape_error(node: Node, reason: str) -> NetworkError:
    return NetworkError(f"{node.op} '{node.name}': {reason}; operands: {describe_operands(node)}", node.span,
                        hint="check the dimensions of the operands (shapes are written first axis fastest, e.g. W:H:C)")


def common_layout(node: Node):
    layouts = [i.layout for i in node.inputs if i.layout is not None]
    if not layouts:
        return None
    seqs = {l for l in layouts if isinstance(l, SeqAxis)}
    if len(seqs) > 1:
        a, b = [i for i in node.inputs if isinstance(i.layout, SeqAxis)][:2]
        raise NetworkError(
            f"{node.op} '{node.name}': inputs '{a.name}' and '{b.name}' have incompatible dynamic axes "
            f"'{a.layout}' and '{b.layout}'", node.span,
            hint="a per-sequence value needs BS.Sequences.BroadcastSequenceAs or ReconcileDynamicAxis")
    return next(iter(seqs)) if seqs else BATCH


def apply_rule(node: Node) -> bool:
    """Run the node's shape rule once; returns True when the node's or an operand's shape changed."""
    op = registry.get(node.op)
    if op is None or op.leaf:
        return False
    try:
        result = op.shape([tuple(i.shape) for i in node.inputs], node.attrs)
        layout = op.layout(node.inputs, node.attrs) if callable(op.layout) else (
            None if op.layout == "none" else common_layout(node))
    except ShapeMismatch as exc:
        raise shape_error(node, str(exc)) from None
    out, infer = (result.out, result.infer) if isinstance(result, ShapeResult) else (result, {})
    changed = False
    for index, shape in infer.items():
        changed |= _infer_operand(node, index, tuple(shape))
    out = tuple(int(d) for d in out)
    if out != node.shape:
        node.shape = out
        changed = True
    if layout is not node.layout and layout != node.layout:
        node.layout = layout
        changed = True
    return changed


def _infer_operand(node: Node, index: int, shape: tuple) -> bool:
    operand = node.inputs[index]
    if operand.shape == shape:
        return False
    old = operand.shape
    if len(old) == len(shape) and all(o == 0 or o == s for o, s in zip(old, shape)):
        operand.shape = shape
        if operand.is_parameter:
            operand.attrs["shape"] = shape
        return True
    if not operand.is_parameter:
        raise shape_error(node, f"operand '{operand.name}' would need shape {format_shape(shape)}")
    # A parameter declared with fewer axes than needed (CNTK pads with inferred axes).
    if all(o == 0 or o == s for o, s in zip(old, shape)) and len(old) < len(shape):
        operand.shape = shape
        operand.attrs["shape"] = shape
        return True
    raise shape_error(node, f"parameter '{operand.name}' {format_shape(old)} cannot take shape {format_shape(shape)}")


def infer_eagerly(node: Node) -> None:
    """Infer at construction when the operands allow it; defer silently when they do not yet."""
    if any(not _known(i.shape) and not i.is_parameter for i in node.inputs):
        return
    try:
        apply_rule(node)
    except NetworkError:
        if all(_known(i.shape) for i in node.inputs):
            raise
        # A parameter with inferred dimensions may be fixed by a later consumer; validation decides.


def validate(nodes: list[Node], max_rounds: int = 50) -> None:
    """Apply every rule until a fixpoint; then every shape must be known."""
    for _ in range(max_rounds):
        changed = False
        for node in nodes:
            if any(not _known(i.shape) and not i.is_parameter for i in node.inputs):
                continue
            changed |= apply_rule(node)
        if not changed:
            break
    for node in nodes:
        if not _known(node.shape):
            what = "parameter" if node.is_parameter else "node"
            raise NetworkError(
                f"cannot infer the dimensions of {what} '{node.name}' {format_shape(node.shape)}",
                node.span,
                hint="an inferred (0) dimension is filled in only from an operation that consumes the value, "
                     "e.g. Times(W, x) fills W's input dimension from x; give the dimension explicitly")
