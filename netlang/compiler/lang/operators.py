"""BrainScript's operators on evaluated values (reference §3.4), shared by the evaluator and the
built-in functions: dispatch by operand types; numbers follow C (division by zero gives inf or
nan); operands the language does not know (network nodes) go to the scope's `NodeFactory`.
"""
from __future__ import annotations

import math

from netlang.compiler.lang.nodes import BuildContext, NodeFactory
from netlang.compiler.lang.values import Array, Lambda, Record, join_path, type_name
from netlang.errors import EvalError, Span

# Largest array `array[a..b](f)` or `Repeat(N, x)` may build; larger ones are user mistakes.
MAX_ARRAY_LENGTH = 1_000_000


def context(path, span: Span | None) -> BuildContext:
    return BuildContext(str(path) if path else "", span)


def to_int(value, span: Span | None) -> int:
    """An integer-valued number as int; EvalError otherwise (array bounds, indices, counts)."""
    if type(value) is float and value.is_integer():
        return int(value)
    hint = None if type(value) is float else f"got a {type_name(value)}"
    raise EvalError("expected expression of type 'integer'", span, hint=hint)


def binary_operation(op: str, left, right, nodes: NodeFactory, span: Span | None = None, path: str = ""):
    """Apply infix operator `op` to two evaluated operands (dispatch by operand types, §3.4)."""
    ltype, rtype = type(left), type(right)
    if ltype is float and rtype is float:
        fn = _NUMBER_OPS.get(op)
    elif ltype is str and rtype is str:
        fn = _STRING_OPS.get(op)
    elif ltype is bool and rtype is bool:
        fn = _BOOL_OPS.get(op)
    elif nodes.is_node(left) or nodes.is_node(right):
        return _node_operation(op, left, right, nodes, span, path)
    elif op == ">>" and ltype is Lambda and rtype is Lambda:
        return compose(left, right, span, path)
    elif op == "<<" and ltype is Array and rtype is float:
        return _shift(left, right, span)
    else:
        fn = None
    if fn is None:
        raise _bad_operands(op, left, right, span)
    return fn(left, right)


def _bad_operands(op: str, left, right, span) -> EvalError:
    return EvalError(f"operator '{op}' cannot be applied to operands of type "
                     f"'{type_name(left)}' and '{type_name(right)}'", span)


def _node_operation(op: str, left, right, nodes: NodeFactory, span, path):
    # CNTK's quirks for && and || with a constant Bool operand: the result is the first operand.
    if op == "&&" and (left is False or right is False):
        return left
    if op == "||":
        if left is True or right is True:
            return left
        raise EvalError("operator '||' is not available for network nodes", span,
                        hint="use BS.Boolean.Or(a, b)")
    if op in ("**", "%", ">>", "<<"):
        raise _bad_operands(op, left, right, span)
    return nodes.binary(op, left, right, context(path, span))


def _shift(arr: Array, count: float, span) -> Array:
    """`arr << n`: a new 0-based array without the first n elements."""
    n = to_int(count, span)
    if n < 0:
        raise EvalError(f"cannot shift an array by a negative count ({n})", span)
    if arr.first != 0:
        raise EvalError("This array is expected to begin with index 0.", span)
    return Array(arr.thunks[n:], 0, span)


def _divide(a: float, b: float) -> float:
    # C semantics: division by zero gives inf or nan instead of an exception.
    if b == 0.0:
        if a == 0.0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _fmod(a: float, b: float) -> float:
    try:
        return math.fmod(a, b)
    except ValueError:  # fmod(x, 0) and fmod(inf, y) are nan in C
        return math.nan


def _power(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except OverflowError:
        negative = a < 0 and b.is_integer() and int(b) % 2 == 1
        return -math.inf if negative else math.inf
    except ValueError:  # pow(0, negative) is a pole (inf); pow(negative, fraction) is nan
        return math.inf if a == 0.0 else math.nan


_COMPARISONS = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}
_NUMBER_OPS = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": _divide, "%": _fmod, "**": _power, **_COMPARISONS,
}
_STRING_OPS = {"+": lambda a, b: a + b, **_COMPARISONS}
_BOOL_OPS = {"&&": lambda a, b: a and b, "||": lambda a, b: a or b, **_COMPARISONS}


def unary_operation(op: str, operand, nodes: NodeFactory, span: Span | None = None, path: str = ""):
    kind = type(operand)
    if op == "!" and kind is bool:
        return not operand
    if op in ("-", "+") and kind is float:
        return -operand if op == "-" else operand
    if nodes.is_node(operand):
        if op == "+":
            return operand
        return nodes.unary(op, operand, context(path, span))
    raise EvalError(f"operator '{op}' cannot be applied to an operand of type '{type_name(operand)}'", span)


def if_value(cond, then_value, else_value, nodes: NodeFactory, span: Span | None = None, path: str = ""):
    """`if` on evaluated values (for helpers such as Min/Max that accept nodes too)."""
    if cond is True:
        return then_value
    if cond is False:
        return else_value
    if nodes.is_node(cond):
        return nodes.if_node(cond, then_value, else_value, context(path, span))
    raise EvalError("expected expression of type 'boolean'", span)


def compose(first: Lambda, second: Lambda, span: Span | None, path: str) -> Lambda:
    """`first >> second`: a function with first's signature computing second(first(...))."""
    for default in first.defaults.values():
        default.force()  # CNTK resolves F's defaults now: the composite may be called many times

    def run_composite(args: Record, call_span, caller_path: str):
        positional = [args.thunk_of(name) for name in first.params]
        named = {name: args.thunk_of(name) for name in first.defaults}
        inner = first.call(positional, named, call_span, join_path(caller_path, "arg"))
        return second.call([inner], {}, call_span, caller_path)

    return Lambda(list(first.params), dict(first.defaults), None, run_composite, span,
                  f"{first.name} >> {second.name}", path)
