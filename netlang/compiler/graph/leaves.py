"""Construction of leaf nodes: inputs, parameters and constants (reference §4.1, §4.4).

The `new ComputationNode` constructor hands the attributes it collected (the record plus the
enclosing function's arguments) to the builder of the op's leaf kind (`OpDef.leaf`), which reads
them through the op's signature (their defaults live there). Initial values are drawn later, once
every dimension is inferred (`runtime/initializers.py`); here we only record the recipe.
"""
from __future__ import annotations

import numpy as np

from netlang.compiler.lang.nodes import BuildContext
from netlang.errors import EvalError, suggest
from netlang.ir.graph import DEFAULT_SEQ, LEGACY_TAGS, TAG_GROUPS, Node, SeqAxis
from netlang.ops import registry
from netlang.ops.registry import OpDef

INIT_KINDS = ("uniform", "gaussian", "normal", "truncNormal", "heNormal", "heUniform", "glorotNormal",
              "glorotUniform", "xavier", "zero", "fixedValue", "fromLiteral", "fromFile", "bilinear")


def _shape_attr(op: OpDef, attrs: dict, ctx: BuildContext) -> tuple:
    shape = op.signature.value(attrs, "shape")
    if shape is None and "rows" in attrs:
        shape = (attrs["rows"], attrs.get("cols", 1)) if attrs.get("cols", 1) != 1 else (attrs["rows"],)
    if shape is None:
        raise EvalError("a shape is required ('shape' or 'dims')", ctx.span)
    if isinstance(shape, (int, float)):
        shape = (int(shape),)
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise EvalError(f"negative dimension in shape {shape}", ctx.span)
    if len(shape) > 12:
        raise EvalError("tensors have at most 12 axes", ctx.span)
    return shape


def build_input(op: OpDef, attrs: dict, ctx: BuildContext) -> Node:
    shape = _shape_attr(op, attrs, ctx)
    if not shape or any(d == 0 for d in shape):
        raise EvalError(f"input dimensions must be given, got {shape}", ctx.span,
                        hint="an Input's shape is never inferred; write e.g. Input{784}")
    axis = op.signature.value(attrs, "dynamicAxis")
    layout = axis if isinstance(axis, SeqAxis) else DEFAULT_SEQ
    if op.leaf == "input" and op.signature.value(attrs, "sparse"):
        op = registry.leaf_op("sparse_input")
    node = Node(op.name, [], {"shape": shape}, name=ctx.path, span=ctx.span, shape=shape, layout=layout,
                tags={"feature"})
    return node


def build_parameter(op: OpDef, attrs: dict, ctx: BuildContext) -> Node:
    shape = _shape_attr(op, attrs, ctx)
    value = op.signature.value
    init = value(attrs, "init") or ""
    init_value = value(attrs, "initValue")
    if init == "":
        if isinstance(init_value, (int, float)) and not isinstance(init_value, bool):
            init = "fixedValue"
        elif attrs.get("initFromFilePath"):
            init = "fromFile"
        elif attrs.get("initFromLiteral"):
            init = "fromLiteral"
        else:
            init = "uniform"
    if init not in INIT_KINDS:
        raise EvalError(f"unknown init '{init}'", ctx.span, hint=suggest(init, INIT_KINDS))
    recipe = {
        "shape": shape,
        "init": init,
        "initValueScale": float(value(attrs, "initValueScale") or 1),
        "initValue": init_value if isinstance(init_value, (int, float)) else value(attrs, "value"),
        "initOutputRank": int(value(attrs, "initOutputRank")),
        "initFilterRank": int(value(attrs, "initFilterRank")),
        "initFromFilePath": value(attrs, "initFromFilePath"),
        "initFromLiteral": value(attrs, "initFromLiteral"),
        "randomSeed": int(value(attrs, "randomSeed")),
    }
    if init == "fromLiteral":
        recipe["literal"] = parse_literal(recipe["initFromLiteral"], ctx)
        if not shape or any(d == 0 for d in shape):
            recipe["shape"] = shape = literal_shape(recipe["literal"])
    node = Node("LearnableParameter", [], recipe, name=ctx.path, span=ctx.span, shape=shape)
    node.is_parameter = True
    node.learning_rate_multiplier = float(value(attrs, "learningRateMultiplier"))
    return node


def build_constant(op: OpDef, attrs: dict, ctx: BuildContext) -> Node:
    attrs = dict(attrs)
    attrs.setdefault("init", "fixedValue")
    attrs["learningRateMultiplier"] = 0.0
    return build_parameter(registry.leaf_op("parameter"), attrs, ctx)


def parse_literal(text: str, ctx: BuildContext) -> np.ndarray:
    """A text matrix: rows separated by newlines (or ';'), numbers by blanks; BS shape (rows:cols)."""
    rows = [r.split() for r in str(text).replace(";", "\n").splitlines() if r.strip()]
    try:
        data = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError:
        raise EvalError("initFromLiteral must be rows of numbers", ctx.span) from None
    if data.ndim != 2 or data.size == 0:
        raise EvalError("initFromLiteral rows must all have the same number of values", ctx.span)
    return data


def literal_shape(matrix: np.ndarray) -> tuple:
    rows, cols = matrix.shape
    return (rows, cols) if cols > 1 else (rows,)


_BUILDERS = {"input": build_input, "sparse_input": build_input, "parameter": build_parameter,
             "constant": build_constant}


def build_leaf(op: OpDef, attrs: dict, ctx: BuildContext) -> Node:
    """The node of leaf op `op` (its `leaf` kind says how it is built) from the collected attributes."""
    return _BUILDERS[op.leaf](op, attrs, ctx)


def apply_tag(node: Node, tag, ctx: BuildContext) -> None:
    if not tag:
        return
    if not isinstance(tag, str):
        raise EvalError("tag must be a string", ctx.span)
    tag = LEGACY_TAGS.get(tag, tag)
    if tag not in TAG_GROUPS:
        raise EvalError(f"unknown tag '{tag}'", ctx.span, hint=suggest(tag, TAG_GROUPS))
    if tag in ("criterion", "evaluation", "output"):
        node.tags.add(tag)
    else:
        node.tags.discard("feature")
        node.tags.add(tag)
