"""A model file's graph checked against the op registry: what ir/modelfile.py cannot know below the ops.

ir/modelfile.py checks that a file is well formed. This checks that its graph is one netlang could
have built, so that a crafted or damaged file fails here, with the node named, instead of deep in a
kernel: every op exists and takes that many inputs; leaves are inputs or parameters; the nodes come
in an order the executor can run (inputs first, except the looping input of a delay); every loop
passes a delay; every shape and dynamic axis follows from the op's rules and the node's attributes.
What fails is a "damaged model file" DataError (exit 65).
"""
from __future__ import annotations

from netlang.compiler.graph import loops
from netlang.compiler.graph.shapeinfer import common_layout
from netlang.errors import DataError, DataPosition, NetworkError
from netlang.ir.graph import Network, Node
from netlang.ir.modelfile import DAMAGED_HINT, DamagedModel, ModelFile, load_model
from netlang.ops import registry
from netlang.ops.registry import ShapeMismatch, ShapeResult

INPUT_LEAVES = ("input", "sparse_input")
PARAMETER_LEAVES = ("parameter", "constant")

# What a shape or layout rule raises when a crafted file gives it attributes it was never meant to
# see (a string for a stride, a missing key …): the rules are written for graphs netlang builds.
_RULE_FAILURES = (ShapeMismatch, NetworkError, TypeError, ValueError, KeyError, IndexError, AttributeError,
                  ZeroDivisionError, OverflowError, RecursionError)


def load_checked_model(path: str) -> ModelFile:
    """`load_model`, then `check_graph`: a model that can be run, or a DataError naming the damage."""
    return checked_model(load_model(path), path)


def checked_model(model: ModelFile, path: str) -> ModelFile:
    """`model` (read from `path`) if `check_graph` passes it, else a DataError naming the damage."""
    try:
        check_graph(model.network)
    except DamagedModel as exc:
        raise DataError(f"damaged model file: {exc}", DataPosition(path), hint=DAMAGED_HINT) from None
    return model


def check_graph(network: Network) -> None:
    """Raise DamagedModel for the first node that netlang could not have built."""
    position = {node.id: i for i, node in enumerate(network.nodes)}
    for index, node in enumerate(network.nodes):
        op = registry.get(node.op)
        part = f"node '{node.name}'"
        if op is None:
            raise DamagedModel(part, f"unknown operation '{node.op}'")
        low, high = op.arity
        if len(node.inputs) < low or 0 <= high < len(node.inputs):
            raise DamagedModel(part, f"{node.op} with {len(node.inputs)} inputs")
        _check_leaf(node, op, part)
        looping = node.inputs[:1] if op.delay else []
        later = next((i for i in node.inputs if position[i.id] >= index and i not in looping), None)
        if later is not None:
            raise DamagedModel(part, f"its input '{later.name}' comes after it")
        if not op.leaf:
            _check_rules(node, op, part)
    try:
        loops.find_loops(network.nodes)
    except NetworkError as exc:
        raise DamagedModel("graph", exc.message) from None


def _check_leaf(node: Node, op, part: str) -> None:
    if node.is_parameter and (op.leaf not in PARAMETER_LEAVES or node.layout is not None):
        raise DamagedModel(part, f"a {node.op} with a dynamic axis cannot be a parameter")
    if op.leaf and not node.is_parameter and (op.leaf not in INPUT_LEAVES or node.layout is None):
        raise DamagedModel(part, f"a {node.op} that is neither a parameter nor an input with a dynamic axis")


def _check_rules(node: Node, op, part: str) -> None:
    try:
        result = op.shape([tuple(i.shape) for i in node.inputs], node.attrs)
        out = tuple(int(d) for d in (result.out if isinstance(result, ShapeResult) else result))
        layout = op.layout(node.inputs, node.attrs) if callable(op.layout) else (
            None if op.layout == "none" else common_layout(node))
    except _RULE_FAILURES as exc:
        raise DamagedModel(part, f"its {node.op} attributes or input shapes do not fit together "
                                 f"({type(exc).__name__})") from None
    if out != node.shape:
        raise DamagedModel(part, f"its shape {node.shape} is not what {node.op} makes of its inputs ({out})")
    if layout != node.layout:
        raise DamagedModel(part, f"its dynamic axis is not what {node.op} makes of its inputs")
