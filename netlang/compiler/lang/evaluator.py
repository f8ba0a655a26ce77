"""Lazy evaluation of BrainScript ASTs.

`evaluate(node, scope, path)` turns an AST node into a value (values.py). Records, arrays and call
arguments are not evaluated when they are made: each member/element/argument becomes a Thunk that
runs on first use, so unused members are never evaluated and members may refer to each other in
any order.

Scopes are Records chained by `parent`: a record literal's parent is the scope it is written in; a
function call's argument scope has the function's definition scope as parent (closure); the file's
top record has the standard library as parent, whose parent is the root scope of built-in helpers
(builtins.py). Argument expressions are evaluated in the caller's scope, default values in the
definition scope.

`path` is the expression path (CNTK's node naming): the dotted member path of the place being
evaluated, `[i]` for array elements, `<Op>Args[i]` for the operands of infix operators. Network
nodes get it through `nodes.BuildContext(path, span)`; the IR uses it as the node's name.
"""
from __future__ import annotations

import copy
import os
import sys
from typing import Sequence

from netlang.compiler.lang.builtins import LANGUAGE_TYPES, format_value, root_scope
from netlang.compiler.lang.nodes import NO_NODES, NodeFactory
from netlang.compiler.lang.operators import MAX_ARRAY_LENGTH, binary_operation, context, to_int, unary_operation
from netlang.compiler.lang.overrides import apply_overrides
from netlang.compiler.lang.values import NONE, Array, Lambda, Record, Thunk, join_path, type_name
from netlang.errors import EvalError, NetlangError, Span, suggest
from netlang.grammar import ast, legacy
from netlang.grammar.library import load_stdlib
from netlang.grammar.parser import parse_expression, parse_file, parse_text

# Deep but legal recursion (Fac(200), a 3000-member chain) needs more Python frames than the
# default 1000; runaway recursion is stopped earlier by values.MAX_NESTING with an EvalError.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 150_000))

# Types whose `new T R` record starts a fresh expression path: the members of a network record
# are named by their own names (`ce`, `z`), as in CNTK, not by where the record is written.
_FRESH_PATH_TYPES = frozenset({"ComputationNetwork"})

# The name of each infix operator in expression paths (`z.PlusArgs[0]`), as CNTK spells them.
OPERATOR_NAMES = {
    "*": "Times", "/": "Div", ".*": "ElementTimes", "**": "Pow", "%": "Mod",
    "+": "Plus", "-": "Minus", "with": "With",
    "<": "LT", "<=": "LE", ">": "GT", ">=": "GE", "==": "Equal", "!=": "NotEqual",
    "&&": "And", "||": "Or", ">>": "Before", "<<": "Shift",
}


def evaluate(node: ast.Node, scope: Record, path=""):
    """The value of expression `node` in `scope`; `path` names the nodes it creates."""
    return _EVALUATORS[node.__class__](node, scope, path)


def lazy(expr: ast.Node, scope: Record, path, name: str, kind: str, span: Span | None) -> Thunk:
    """A thunk that evaluates `expr` in `scope` on first use."""
    if expr.__class__ in _LITERALS:
        thunk = Thunk.of(_EVALUATORS[expr.__class__](expr, scope, path), name, span)
        thunk.kind, thunk.expr, thunk.scope = kind, expr, scope
        return thunk
    if kind == "member":
        # A node made while evaluating this member is named after it (`z = DenseLayer{10}(h)` is `z`).
        return Thunk(lambda: scope.nodes.name_member_value(evaluate(expr, scope, path), str(path)),
                     name, kind, span, expr, scope)
    return Thunk(lambda: evaluate(expr, scope, path), name, kind, span, expr, scope)


# --- literals ----------------------------------------------------------------------------------

def _eval_number(node: ast.Number, scope, path):
    return float(node.value)


def _eval_string(node: ast.String, scope, path):
    return node.value


def _eval_bool(node: ast.Bool, scope, path):
    return bool(node.value)


def _eval_interp(node: ast.Interp, scope, path):
    pieces = []
    for part in node.parts:
        value = part.value if isinstance(part, ast.String) else evaluate(part, scope, path)
        pieces.append(value if isinstance(value, str) else format_value(value, "", part.span))
    return "".join(pieces)


# --- names -------------------------------------------------------------------------------------

def _eval_ident(node: ast.Ident, scope: Record, path):
    thunk = scope.lookup(node.name)
    if thunk is None:
        raise EvalError(f"unknown identifier '{node.name}'", node.span,
                        hint=suggest(node.name, scope.visible_names()))
    return thunk.force()


def _eval_dot(node: ast.Dot, scope: Record, path):
    obj = evaluate(node.obj, scope, path)
    if isinstance(obj, Record):
        # Like CNTK, `r.x` searches r and then r's lexical parents.
        thunk = obj.lookup(node.name)
        if thunk is None:
            where = f" in record '{obj.path}'" if obj.path else ""
            raise EvalError(f"unknown member '{node.name}'{where}", node.span,
                            hint=suggest(node.name, obj.names()))
        return thunk.force()
    if isinstance(obj, (float, bool, str, Array, Lambda)):
        raise EvalError("expected expression of type 'record'", node.obj.span,
                        hint=f"'.{node.name}' is applied to a {type_name(obj)}")
    return scope.nodes.member(obj, node.name, context(path, node.span))


def _eval_index(node: ast.Index, scope: Record, path):
    arr = evaluate(node.obj, scope, join_path(path, "_vector"))
    if not isinstance(arr, Array):
        raise EvalError("expected expression of type 'array'", node.obj.span,
                        hint=f"indexing is applied to a {type_name(arr)}")
    index = to_int(evaluate(node.index, scope, join_path(path, "_index")), node.index.span)
    return arr.get(index, node.index.span)


# --- functions ---------------------------------------------------------------------------------

def _eval_lambda(node: ast.Lambda, scope: Record, path):
    params: list[str] = []
    defaults: dict[str, Thunk] = {}
    for param in node.params:
        if param.name in defaults or param.name in params:
            raise EvalError(f"duplicate parameter '{param.name}'", param.span)
        if param.default is None:
            params.append(param.name)
        else:
            # Default values are evaluated in the definition scope, once per function value.
            defaults[param.name] = lazy(param.default, scope, join_path(path, param.name),
                                        param.name, "default value", param.span)
    body = node.body

    def run_body(args: Record, span, caller_path: str):
        return evaluate(body, args, caller_path)

    return Lambda(params, defaults, scope, run_body, node.span, node.name or "lambda", path)


def _eval_call(node: ast.Call, scope: Record, path):
    fn = evaluate(node.fn, scope, path)
    if not isinstance(fn, Lambda):
        raise EvalError("expected expression of type 'function'", node.fn.span,
                        hint=f"this is a {type_name(fn)}, not a function")
    positional: list[Thunk] = []
    named: dict[str, Thunk] = {}
    for arg in node.args:
        if arg.name is None:
            i = len(positional)
            name = fn.params[i] if i < len(fn.params) else f"arg{i}"
            positional.append(lazy(arg.value, scope, join_path(path, name), name, "argument", arg.span))
        elif arg.name in named:
            raise EvalError(f"argument '{arg.name}' is given twice", arg.span)
        else:
            named[arg.name] = lazy(arg.value, scope, join_path(path, arg.name), arg.name,
                                   "argument", arg.span)
    return fn.call(positional, named, node.span, path)


# --- operators ---------------------------------------------------------------------------------

def _eval_binop(node: ast.BinOp, scope: Record, path):
    op = node.op
    if op == "with":
        raise EvalError("operator 'with' is not implemented", node.span)
    name = OPERATOR_NAMES[op]
    left, right = node.left, node.right
    left = evaluate(left, scope, path if left.__class__ in _PATHLESS else join_path(path, name + "Args[0]"))
    right = evaluate(right, scope, path if right.__class__ in _PATHLESS else join_path(path, name + "Args[1]"))
    return binary_operation(op, left, right, scope.nodes, node.span, path)


def _eval_unary(node: ast.UnaryOp, scope: Record, path):
    op = node.op
    sub_path = {"-": "_negate", "!": "_not"}.get(op, "")
    operand = evaluate(node.operand, scope, join_path(path, sub_path))
    return unary_operation(op, operand, scope.nodes, node.span, path)


def _eval_if(node: ast.If, scope: Record, path):
    cond = evaluate(node.cond, scope, join_path(path, "if"))
    if cond is True:
        return evaluate(node.then, scope, path)
    if cond is False:
        return evaluate(node.else_, scope, path)
    if scope.nodes.is_node(cond):
        then_value = evaluate(node.then, scope, join_path(path, "then"))
        else_value = evaluate(node.else_, scope, join_path(path, "else"))
        return scope.nodes.if_node(cond, then_value, else_value, context(path, node.span))
    raise EvalError("expected expression of type 'boolean'", node.cond.span,
                    hint=f"the condition is a {type_name(cond)}")


# --- records and arrays ------------------------------------------------------------------------

def make_record(node: ast.Record, parent: Record | None, path: str) -> Record:
    """A lazy Record for a record literal: one thunk per member, the record itself as their scope."""
    record = Record(parent, path, node.span)
    for member in node.members:
        if record.has(member.name):
            raise EvalError(f"duplicate member definition '{member.name}'", member.name_span or member.span)
        member_path = join_path(path, member.name)
        # A network builder's record is `new ComputationNetwork [ … ]` in CNTK, which starts a fresh
        # expression path: its nodes are named `ce`, `out.z`, not `train.network.ce`.
        eval_path = "" if _is_network_builder(member) else member_path
        record.add(member.name, lazy(member.expr, record, eval_path, member_path, "member", member.span),
                   member)
    return record


NETWORK_BUILDER_NAMES = ("network", "brainscriptnetworkbuilder", "experimentalnetworkbuilder")


def _is_network_builder(member: ast.Member) -> bool:
    return member.name.lower() in NETWORK_BUILDER_NAMES and isinstance(member.expr, ast.Record)


def _eval_record(node: ast.Record, scope: Record, path):
    return make_record(node, scope, path)


def _elements(items: list[ast.Node], scope: Record, path: str) -> list[Thunk]:
    thunks = []
    for i, item in enumerate(items):
        element_path = join_path(path, f"[{i}]")
        thunks.append(lazy(item, scope, element_path, element_path, "element", item.span))
    return thunks


def _eval_array(node: ast.ArrayLit, scope: Record, path):
    return Array(_elements(node.items, scope, path), 0, node.span)


def _eval_fsharp_array(node: ast.FSharpArray, scope: Record, path):
    if not node.items:
        return NONE  # `[| |]` is BS.Constants.None, compared by identity
    return Array(_elements(node.items, scope, path), 0, node.span)


def _eval_array_ctor(node: ast.ArrayCtor, scope: Record, path):
    first = to_int(evaluate(node.first, scope, join_path(path, "array_first")), node.first.span)
    last = to_int(evaluate(node.last, scope, join_path(path, "array_last")), node.last.span)
    fn = evaluate(node.fn, scope, join_path(path, "_initializer"))
    if not isinstance(fn, Lambda) or len(fn.params) != 1:
        raise EvalError("'array' requires an initializer function with one argument (the index)",
                        node.fn.span)
    if last - first + 1 > MAX_ARRAY_LENGTH:
        raise EvalError(f"array [{first}..{last}] is too large (more than {MAX_ARRAY_LENGTH} elements)",
                        node.span)
    thunks = [_element_thunk(fn, index, join_path(path, f"[{index}]"), node.fn.span) for index in range(first, last + 1)]
    return Array(thunks, first, node.span)


def _element_thunk(fn: Lambda, index: int, path: str, span: Span | None) -> Thunk:
    # Elements are computed on demand, so `h[t]` may refer to `h[t-1]` of the same array.
    return Thunk(lambda: fn.call([float(index)], {}, span, path), path, "element", span)


# --- a value that could not be read (legacy configs: an undefined $name$, a network with a syntax error)

def _eval_failure(node: ast.Failure, scope: Record, path):
    if not isinstance(node.error, NetlangError):     # only the legacy reader makes these; be safe anyway
        raise EvalError(str(node.error), node.span)
    error = copy.copy(node.error)
    error.call_chain = []
    raise error


# --- new ---------------------------------------------------------------------------------------

def _eval_new(node: ast.New, scope: Record, path):
    arg_path = "" if node.type_name in _FRESH_PATH_TYPES else path
    arg = evaluate(node.arg, scope, arg_path)
    if not isinstance(arg, Record):
        raise EvalError("expected expression of type 'record'", node.arg.span,
                        hint=f"'new {node.type_name}' takes a record, e.g. new {node.type_name} [ ... ]")
    language_type = LANGUAGE_TYPES.get(node.type_name)
    if language_type is not None:
        return language_type(arg, node.span)
    return scope.nodes.construct(node.type_name, arg, context(path, node.span))


_EVALUATORS = {
    ast.Number: _eval_number,
    ast.String: _eval_string,
    ast.Bool: _eval_bool,
    ast.Interp: _eval_interp,
    ast.Ident: _eval_ident,
    ast.Dot: _eval_dot,
    ast.Index: _eval_index,
    ast.Call: _eval_call,
    ast.BinOp: _eval_binop,
    ast.UnaryOp: _eval_unary,
    ast.ArrayLit: _eval_array,
    ast.FSharpArray: _eval_fsharp_array,
    ast.Record: _eval_record,
    ast.If: _eval_if,
    ast.Lambda: _eval_lambda,
    ast.New: _eval_new,
    ast.ArrayCtor: _eval_array_ctor,
    ast.Failure: _eval_failure,
}
_LITERALS = frozenset({ast.Number, ast.String, ast.Bool})
_PATHLESS = _LITERALS | {ast.Ident}  # expressions that never create nodes, so need no path


# --- scopes and entry points -------------------------------------------------------------------

def top_scope(file_ast: ast.Record, nodes: NodeFactory = NO_NODES) -> Record:
    """The lazy top record of a file: parent is a fresh standard library over the root helpers.

    The library is instantiated per file so that nodes made by library members (constants such as
    BS.Constants.One) belong to this file's network only. `nodes` makes the file's network nodes.
    """
    library = make_record(load_stdlib(), root_scope(nodes), "")
    return make_record(file_ast, library, "")


def evaluate_text(text: str, name: str = "<string>", overrides: Sequence[str] = (),
                  include_path: Sequence[str] = (), nodes: NodeFactory = NO_NODES) -> Record:
    """Parse `text` as a file, apply command-line overrides, and return its (lazy) top record. A name
    ending in `.cntk` is read by CNTK's legacy config rules (grammar/legacy.py)."""
    if legacy.is_legacy_config(name):
        return top_scope(_legacy_ast(legacy.read_legacy_text(text, name), name, overrides, include_path), nodes)
    file_ast = parse_text(text, name, tuple(include_path))
    if overrides:
        file_ast = apply_overrides(file_ast, overrides)
    return top_scope(file_ast, nodes)


def evaluate_file(path: str, overrides: Sequence[str] = (), include_path: Sequence[str] = (),
                  nodes: NodeFactory = NO_NODES) -> Record:
    """Read, parse and evaluate a config file; includes are also searched next to the file. A `.cntk`
    file is read by CNTK's legacy config rules (grammar/legacy.py)."""
    if legacy.is_legacy_config(path):
        file_ast = _legacy_ast(legacy.read_legacy_file(path), path, overrides, include_path)
    else:
        file_ast = parse_file(path, tuple(include_path))
        if overrides:
            file_ast = apply_overrides(file_ast, overrides)
    top = top_scope(file_ast, nodes)
    # Beside the library, so that a ConfigDir the file defines itself (CNTK configs often do) wins.
    top.parent.add("ConfigDir", Thunk.of(config_directory(path), "ConfigDir"))
    return top


def config_directory(path: str) -> str:
    """`$ConfigDir$`: the directory of the config file as the command line names it ("." for a file
    in the working directory). Relative data paths resolve against the working directory, as in
    CNTK; "$ConfigDir$/data.ctf" names a file next to the config wherever netlang runs."""
    return os.path.dirname(path) or "."


def _legacy_ast(file_ast: ast.Record, path: str, overrides: Sequence[str], include_path: Sequence[str]) -> ast.Record:
    """A legacy config's AST: overrides act as more config lines, then `$name$` is substituted, so a
    command-line value reaches every `$name$` that uses it, as in CNTK. `$ConfigDir$` is the config's
    directory unless the file or the command line defines it."""
    if overrides:
        file_ast = apply_overrides(file_ast, overrides, legacy=True)
    return legacy.resolve(file_ast, include_path, defaults={"ConfigDir": config_directory(path)})


def evaluate_expression(text: str, scope: Record | None = None, nodes: NodeFactory = NO_NODES):
    """Evaluate one expression (tests, the REPL); by default in an empty file's scope."""
    node = parse_expression(text, "<expression>")
    if scope is None:
        scope = top_scope(ast.Record(node.span, []), nodes)
    return evaluate(node, scope, "")


def force_all(value, seen: set | None = None):
    """Evaluate every member and element reachable from `value` (functions are not called).

    Used by `netlang check` and the tests to surface every evaluation error; returns `value`.
    """
    seen = set() if seen is None else seen
    pending = [value]
    while pending:
        current = pending.pop()
        if not isinstance(current, (Record, Array)) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, Record):
            pending.extend(current.get(name) for name in current.names())
        else:
            pending.extend(current.items())
    return value
