"""Where the evaluator meets the graph IR.

The evaluator knows nothing about nodes; when an operator meets a node operand, when `new T R` is
evaluated, or when a member of a node is read, it calls the functions registered here. The IR
module (`compiler/builtins.py`) registers them on import. Until then, node operations raise a
clear EvalError.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from netlang.errors import EvalError, Span


@dataclass(frozen=True)
class BuildContext:
    """What a node constructor needs to know about the place it is called from.

    `path` is the expression path of the member being evaluated (CNTK's node naming: `model.conv1.W`,
    `ce`, `out.h1.PlusArgs[0]`); `span` is the source position of the expression that creates it.
    """

    path: str
    span: Span | None


# Filled in by the IR side.
_is_node: Callable[[Any], bool] = lambda value: False
_binary: Callable | None = None        # (op, left, right, ctx) -> value
_unary: Callable | None = None         # (op, operand, ctx) -> value
_if_node: Callable | None = None       # (cond, then_value, else_value, ctx) -> value
_node_member: Callable | None = None   # (node, name, ctx) -> value
_constructors: dict[str, Callable] = {}  # type name -> (record, ctx) -> value


def install(is_node, binary, unary, if_node, node_member) -> None:
    global _is_node, _binary, _unary, _if_node, _node_member
    _is_node, _binary, _unary, _if_node, _node_member = is_node, binary, unary, if_node, node_member


def name_member_value(value, path: str):
    """A node that a member's own evaluation created (its name lies below the member's path) takes
    the member's name, as CNTK names nodes by the member they are bound to."""
    if path and _is_node(value):
        name = getattr(value, "name", "")
        if name.startswith(path + "."):
            value.name = path
    return value


def register_constructor(type_name: str, fn: Callable) -> None:
    _constructors[type_name] = fn


def _ensure_ir() -> None:
    # Importing the builtins module installs the node hooks and the `new` constructors.
    try:
        import netlang.compiler.graph.nodes  # noqa: F401
    except ImportError:
        pass


def is_node(value) -> bool:
    return _is_node(value)


def binary_node_op(op: str, left, right, ctx: BuildContext):
    _ensure_ir()
    if _binary is None:
        raise EvalError(f"operator '{op}' on network nodes is not available", ctx.span)
    return _binary(op, left, right, ctx)


def unary_node_op(op: str, operand, ctx: BuildContext):
    _ensure_ir()
    if _unary is None:
        raise EvalError(f"operator '{op}' on network nodes is not available", ctx.span)
    return _unary(op, operand, ctx)


def if_node(cond, then_value, else_value, ctx: BuildContext):
    _ensure_ir()
    if _if_node is None:
        raise EvalError("'if' with a node condition is not available", ctx.span)
    return _if_node(cond, then_value, else_value, ctx)


def node_member(node, name: str, ctx: BuildContext):
    _ensure_ir()
    if _node_member is None:
        raise EvalError(f"node has no member '{name}'", ctx.span)
    return _node_member(node, name, ctx)


def construct(type_name: str, record, ctx: BuildContext):
    _ensure_ir()
    fn = _constructors.get(type_name)
    if fn is None:
        from netlang.errors import suggest

        raise EvalError(f"unknown type '{type_name}' after 'new'", ctx.span,
                        hint=suggest(type_name, _constructors, case_insensitive=False))
    return fn(record, ctx)
