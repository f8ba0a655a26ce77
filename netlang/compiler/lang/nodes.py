"""Where the language meets network nodes: the `NodeFactory` an evaluation is given.

The language knows nothing about nodes. When an operator meets an operand it does not know, when
`new T R` is evaluated, or when a member of such a value is read, the evaluator asks the factory of
the scope it evaluates in. A file is evaluated with one factory (`evaluate_file(..., nodes=…)`),
kept by its root scope and inherited by every record made below it, so values computed long after
the file was read (a network built by an action) still reach it.

The factory here knows no nodes: configs evaluated with it have plain values only, and anything
that would make a node is a clear error. The graph compiler (`compiler/graph/nodes.py`) provides the
factory that builds IR nodes; the layers above hand it to the evaluator.
"""
from __future__ import annotations

from dataclasses import dataclass

from netlang.errors import EvalError, Span, suggest


@dataclass(frozen=True)
class BuildContext:
    """What a node constructor needs to know about the place it is called from.

    `path` is the expression path of the member being evaluated (CNTK's node naming: `model.conv1.W`,
    `ce`, `out.h1.PlusArgs[0]`); `span` is the source position of the expression that creates it.
    """

    path: str
    span: Span | None


class NodeFactory:
    """The evaluator's questions about values it does not know (network nodes), answered with
    "there are none". Subclasses that build nodes override every method."""

    def is_node(self, value) -> bool:
        return False

    def binary(self, op: str, left, right, ctx: BuildContext):
        raise EvalError(f"operator '{op}' on network nodes is not available here", ctx.span)

    def unary(self, op: str, operand, ctx: BuildContext):
        raise EvalError(f"operator '{op}' on network nodes is not available here", ctx.span)

    def if_node(self, cond, then_value, else_value, ctx: BuildContext):
        raise EvalError("'if' with a node condition is not available here", ctx.span)

    def member(self, node, name: str, ctx: BuildContext):
        raise EvalError(f"a value of this type has no member '{name}'", ctx.span)

    def constructors(self) -> dict:
        """Type name -> `(record, ctx) -> value` for `new T R`."""
        return {}

    def construct(self, type_name: str, record, ctx: BuildContext):
        constructor = self.constructors().get(type_name)
        if constructor is None:
            raise EvalError(f"unknown type '{type_name}' after 'new'", ctx.span,
                            hint=suggest(type_name, self.constructors(), case_insensitive=False))
        return constructor(record, ctx)

    def name_member_value(self, value, path: str):
        """A member's value as the member names it; values that are no nodes stay as they are."""
        return value


NO_NODES = NodeFactory()
