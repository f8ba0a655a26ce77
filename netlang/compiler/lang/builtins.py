"""Built-in non-network functions of BrainScript (CNTK.core.bs "non-neural-network functions").

They live in the root scope, below the standard library, so the library and user files can use
(or shadow) them: Length, Format, Substr, Replace, Chr, Mod, IntDiv, Min, Max, Sign, Fac,
IsSameObject, IsArray, IsDouble, IsBool, Print, Fail, None, and the array helpers the library is
built on (_AsArray, _ConcatArrays, _ForceResizeArray, Repeat). `LANGUAGE_TYPES` gives the same helpers
as CNTK.core.bs defines them, through `new NumericFunction [ … ]`, `new StringFunction [ … ]`,
`new CompareFunction [ … ]`, `new PrintAction [ … ]` and `new FailAction [ … ]`.

Each helper is a Python function `(args, span, path)` reading its arguments from the argument
scope `args` (a Record), so arguments it does not need stay unevaluated.
"""
from __future__ import annotations

import re
import sys

from netlang.compiler.lang.nodes import NodeFactory
from netlang.compiler.lang.operators import MAX_ARRAY_LENGTH, binary_operation, if_value, to_int
from netlang.compiler.lang.values import NONE, Array, Lambda, Record, Thunk, type_name
from netlang.errors import EvalError, Span

_MAX_FORMAT_DEPTH = 8  # records that contain themselves print as "..." below this depth
# The middle of a printf conversion: flags, width, precision, length (no '*': there is one value).
_FORMAT = re.compile(r"[-+ #0]*(\d*)(?:\.(\d*))?[hlL]?")
_MAX_FORMAT_WIDTH = 1000  # a width of 10**9 would allocate gigabytes


def _expect(value, kind: type, what: str, span: Span | None):
    if type(value) is not kind:
        expected = {float: "number", str: "string", bool: "boolean"}[kind]
        raise EvalError(f"{what} must be a {expected}, not a {type_name(value)}", span)
    return value


def _integer(value, what: str, span: Span | None) -> int:
    _expect(value, float, what, span)
    return to_int(value, span)


def _zero_based(arr: Array, span: Span | None) -> Array:
    if arr.first != 0:
        raise EvalError("This array is expected to begin with index 0.", span,
                        hint=f"this array starts at index {arr.first}")
    return arr


def _as_array(value) -> Array:
    return value if isinstance(value, Array) else Array([Thunk.of(value)], 0)


# --- formatting --------------------------------------------------------------------------------

def _printf(template: str, value, span: Span | None) -> str:
    try:
        return template % value
    except (ValueError, TypeError, OverflowError):
        raise EvalError(f"invalid format '{template[1:-1]}'", span,
                        hint="give the middle of a printf format, e.g. '.2' or '5'") from None


def _check_format(how: str, span: Span | None) -> None:
    match = _FORMAT.fullmatch(how)
    if match is None or any(int(n or 0) > _MAX_FORMAT_WIDTH for n in match.groups()):
        raise EvalError(f"invalid format '{how}'", span,
                        hint="give the middle of a printf format, e.g. '.2' or '5'")


def format_value(value, how: str = "", span: Span | None = None, depth: int = 0) -> str:
    """CNTK's Format(): `how` is a printf format without '%' and type letter ('.2' -> '%.2f').

    Integral numbers print like %d, other numbers like %f, strings like %s; records and arrays
    print their members.
    """
    if "%" in how:
        raise EvalError("format string must not contain %", span)
    _check_format(how, span)
    if isinstance(value, str):
        return _printf(f"%{how}s", value, span)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer():
            return _printf(f"%{how}d", int(value), span)
        return _printf(f"%{how}f", value, span)
    if depth >= _MAX_FORMAT_DEPTH:
        return "..."
    if isinstance(value, Record):
        members = (f"{name} = {format_value(value.get(name), how, span, depth + 1)}" for name in value.names())
        return "[ " + " ; ".join(members) + " ]"
    if isinstance(value, Array):
        return "(" + " : ".join(format_value(v, how, span, depth + 1) for v in value.items()) + ")"
    if isinstance(value, Lambda):
        return f"<function {value.name}>"
    return str(value)


# --- the helpers -------------------------------------------------------------------------------

def _length(args: Record, span, path):
    x = args.get("x")
    if isinstance(x, str):
        return float(len(x))
    if isinstance(x, Array):
        return float(len(_zero_based(x, span)))
    raise EvalError(f"Length() expects a string or an array, not a {type_name(x)}", span)


def _format(args: Record, span, path):
    how = _expect(args.get("format"), str, "the format of Format()", span)
    return format_value(args.get("value"), how, span)


def _substr(args: Record, span, path):
    s = _expect(args.get("s"), str, "the string of Substr()", span)
    begin = _integer(args.get("begin"), "the begin of Substr()", span)
    num = _integer(args.get("num"), "the length of Substr()", span)
    # Negative begin counts from the end; negative num means "to the end"; both may overshoot.
    if begin < 0:
        begin = len(s) + begin if len(s) + begin >= 0 else len(s)
    begin = min(begin, len(s))
    end = len(s) if num < 0 else min(begin + num, len(s))
    return s[begin:end]


def _replace(args: Record, span, path):
    s = _expect(args.get("s"), str, "the string of Replace()", span)
    old = _expect(args.get("from"), str, "the 'from' of Replace()", span)
    new = _expect(args.get("to"), str, "the 'to' of Replace()", span)
    return s.replace(old, new) if old else s


def _chr(args: Record, span, path):
    code = _integer(args.get("c"), "the argument of Chr()", span)
    try:
        return chr(code)
    except (ValueError, OverflowError):
        raise EvalError(f"Chr({code}): not a Unicode code point", span) from None


def _int_pair(args: Record, what: str, span) -> tuple[int, int]:
    x = _integer(args.get("x"), f"the first argument of {what}()", span)
    y = _integer(args.get("y"), f"the second argument of {what}()", span)
    if y == 0:
        raise EvalError(f"{what}(): division by zero", span)
    return x, y


def _truncated_quotient(x: int, y: int) -> int:
    # C integer division truncates toward zero (Python's // floors).
    q = abs(x) // abs(y)
    return q if (x < 0) == (y < 0) else -q


def _mod(args: Record, span, path):
    x, y = _int_pair(args, "Mod", span)
    return float(x - y * _truncated_quotient(x, y))


def _int_div(args: Record, span, path):
    x, y = _int_pair(args, "IntDiv", span)
    return float(_truncated_quotient(x, y))


# Min, Max and Sign are `if` expressions in CNTK.core.bs, so they work on nodes too (If nodes).
def _min(args: Record, span, path):
    a, b = args.get("a"), args.get("b")
    return if_value(binary_operation("<", a, b, args.nodes, span, path), a, b, args.nodes, span, path)


def _max(args: Record, span, path):
    a, b = args.get("a"), args.get("b")
    return if_value(binary_operation(">", a, b, args.nodes, span, path), a, b, args.nodes, span, path)


def _sign(args: Record, span, path):
    x, nodes = args.get("x"), args.nodes
    negative_or_zero = if_value(binary_operation("<", x, 0.0, nodes, span, path), -1.0, 0.0, nodes, span, path)
    return if_value(binary_operation(">", x, 0.0, nodes, span, path), 1.0, negative_or_zero, nodes, span, path)


def _fac(args: Record, span, path):
    n = _expect(args.get("n"), float, "the argument of Fac()", span)
    result = 1.0
    while n > 1:
        result *= n
        n -= 1
    return result


def _is_same_object(args: Record, span, path):
    return args.get("a") is args.get("b")


def _is_array(args: Record, span, path):
    return isinstance(args.get("a"), Array)


def _is_double(args: Record, span, path):
    return type(args.get("a")) is float


def _is_bool(args: Record, span, path):
    return type(args.get("a")) is bool


def _print(args: Record, span, path):
    value = args.get("value")
    how = _expect(args.get("format"), str, "the format of Print()", span)
    text = value if isinstance(value, str) and not how else format_value(value, how, span)
    print(text, file=sys.stderr, flush=True)
    return value


def _fail(args: Record, span, path):
    what = args.get("what")
    raise EvalError(what if isinstance(what, str) else format_value(what, "", span), span)


def _as_array_helper(args: Record, span, path):
    return _as_array(args.get("x"))


def _concat_arrays(args: Record, span, path):
    a = _zero_based(_as_array(args.get("aOrScalar")), span)
    b = _zero_based(_as_array(args.get("bOrScalar")), span)
    if not a.thunks and not b.thunks:
        return NONE
    return Array(a.thunks + b.thunks, 0, span)


def _force_resize_array(args: Record, span, path):
    n = _integer(args.get("N"), "the length of _ForceResizeArray()", span)
    arr = _zero_based(_as_array(args.get("arrayOrScalar")), span)
    if n <= len(arr.thunks):
        return Array(arr.thunks[:max(n, 0)], 0, span)
    if not arr.thunks:
        raise EvalError("BottomlessExpansion(): needs at least one element to expand.", span)
    return Array(arr.thunks + [arr.thunks[-1]] * (n - len(arr.thunks)), 0, span)


def _repeat(args: Record, span, path):
    n = _integer(args.get("N"), "the count of Repeat()", span)
    if n > MAX_ARRAY_LENGTH:
        raise EvalError(f"Repeat({n}, ...) is too large (more than {MAX_ARRAY_LENGTH})", span)
    what = args.thunk_of("what")
    # As in CNTK.core.bs, Repeat(N, x) = Repeat(N-1, x) : x, so the result is nested:
    # Repeat(2, x) is ((None : x) : x). Consumers of shapes flatten it.
    result = NONE
    for _ in range(n):
        result = Array([Thunk.of(result), what], 0, span)
    return result


# --- `new T [ … ]` of CNTK's helper types: how CNTK.core.bs itself defines the helpers above ----------
# (`Length(x) = new NumericFunction [ what = 'Length' ; arg = x ]`). The record's values are found as
# CNTK's C++ side finds them, in the record and its enclosing scopes (the calling function's arguments).

def _helper_call(impl, named: dict, record: Record, span):
    args = Record(None, "", span, is_arguments=True, nodes=record.nodes)
    for name, value in named.items():
        args.add(name, Thunk.of(value, name, span))
    return impl(args, span, "")


def _field(record: Record, name: str, span):
    thunk = record.lookup(name)
    if thunk is None:
        raise EvalError(f"required parameter '{name}' not found", span)
    return thunk.force()


def _pair(record: Record, name: str, span) -> list:
    value = _field(record, name, span)
    items = value.items() if isinstance(value, Array) else [value]
    if len(items) != 2:
        raise EvalError(f"'{name}' must hold two values, got {len(items)}", span)
    return items


def _which(record: Record, table: dict, type_name_: str, span):
    what = _field(record, "what", span)
    if what not in table:
        raise EvalError(f"{type_name_}: unknown function '{what}'", span, hint=f"one of {', '.join(table)}")
    return table[what]


def _new_numeric_function(record: Record, span):
    def length():
        return _helper_call(_length, {"x": _field(record, "arg", span)}, record, span)

    def pair(impl):
        return lambda: _helper_call(impl, dict(zip("xy", _pair(record, "args", span))), record, span)

    return _which(record, {"Length": length, "Mod": pair(_mod), "IntDiv": pair(_int_div)}, "NumericFunction", span)()


def _new_string_function(record: Record, span):
    def get(name):
        return _field(record, name, span)

    table = {
        "Format": lambda: _helper_call(_format, {"value": get("arg"), "format": get("how")}, record, span),
        "Replace": lambda: _helper_call(_replace, {"s": get("arg"), "from": get("replacewhat"), "to": get("withwhat")},
                                        record, span),
        "Substr": lambda: _helper_call(_substr, {"s": get("arg"), "begin": get("pos"), "num": get("chars")}, record, span),
        "Chr": lambda: _helper_call(_chr, {"c": get("arg")}, record, span),
    }
    return _which(record, table, "StringFunction", span)()


def _new_compare_function(record: Record, span):
    def one(impl):
        return lambda: _helper_call(impl, {"a": _field(record, "args", span)}, record, span)

    table = {"IsSameObject": lambda: _helper_call(_is_same_object, dict(zip("ab", _pair(record, "args", span))),
                                                  record, span),
             "IsArray": one(_is_array), "IsDouble": one(_is_double), "IsBool": one(_is_bool)}
    return _which(record, table, "CompareFunction", span)()


def _new_print_action(record: Record, span):
    return _helper_call(_print, {"value": _field(record, "what", span), "format": ""}, record, span)


def _new_fail_action(record: Record, span):
    return _helper_call(_fail, {"what": _field(record, "what", span)}, record, span)


# `new T` types of the language itself (all other types are the node factory's).
LANGUAGE_TYPES = {
    "NumericFunction": _new_numeric_function,
    "StringFunction": _new_string_function,
    "CompareFunction": _new_compare_function,
    "PrintAction": _new_print_action,
    "FailAction": _new_fail_action,
}


# name -> (positional parameters, optional parameters with defaults, implementation)
_HELPERS = {
    "Length": (["x"], {}, _length),
    "Format": (["value", "format"], {}, _format),
    "Substr": (["s", "begin", "num"], {}, _substr),
    "Replace": (["s", "from", "to"], {}, _replace),
    "Chr": (["c"], {}, _chr),
    "Mod": (["x", "y"], {}, _mod),
    "IntDiv": (["x", "y"], {}, _int_div),
    "Min": (["a", "b"], {}, _min),
    "Max": (["a", "b"], {}, _max),
    "Sign": (["x"], {}, _sign),
    "Fac": (["n"], {}, _fac),
    "IsSameObject": (["a", "b"], {}, _is_same_object),
    "IsArray": (["a"], {}, _is_array),
    "IsDouble": (["a"], {}, _is_double),
    "IsBool": (["a"], {}, _is_bool),
    "Print": (["value"], {"format": ""}, _print),
    "Fail": (["what"], {}, _fail),
    "_AsArray": (["x"], {}, _as_array_helper),
    "_ConcatArrays": (["aOrScalar", "bOrScalar"], {}, _concat_arrays),
    "_ForceResizeArray": (["N", "arrayOrScalar"], {}, _force_resize_array),
    "Repeat": (["N", "what"], {}, _repeat),
}

HELPER_NAMES = frozenset(_HELPERS) | {"None"}

def root_scope(nodes: NodeFactory) -> Record:
    """The scope below the standard library: the helpers plus `None`. One per evaluated file: it
    holds the file's node factory, which every scope below inherits."""
    root = Record(None, "", Span("<builtin>", 1, 1), nodes=nodes)
    for name, (params, defaults, impl) in _HELPERS.items():
        default_thunks = {key: Thunk.of(value, key) for key, value in defaults.items()}
        fn = Lambda(params, default_thunks, root, impl, None, name, name)
        root.add(name, Thunk.of(fn, name))
    root.add("None", Thunk.of(NONE, "None"))
    return root
