"""Grammar rules -> AST nodes (`ast.py`), with source spans, desugaring as the parse goes.

`AstBuilder` is handed to Lark as an embedded transformer, so each method runs the moment the
LALR parser reduces the rule of the same name; no parse tree is built. Children are the rule's
tokens (every terminal is kept, for spans) and the nodes its sub-rules already returned.

Desugaring done here (see the docstring of ast.py): `F(x) = e` and `arr[i:a..b] = e` members,
`x => e`, the n-ary `:` array, parentheses, `"...$name$..."` interpolation.
"""
from __future__ import annotations

import math
import re

from lark import Token

from netlang.errors import ParseError, Span
from netlang.grammar import ast

# `$name$` inside a string: a letter or '_' then letters, digits, '_'; anything else stays literal.
_INTERPOLATION = re.compile(r"\$([^\W\d]\w*)\$")


def span_of(item) -> Span:
    """The span of a node or of one of our scanner's tokens."""
    return item.span if isinstance(item, ast.Node) else item.span()


def span_between(first, last) -> Span:
    """From the start of `first` to the end of `last` (token or node)."""
    a, b = span_of(first), span_of(last)
    if a.file != b.file:  # an include spliced in between: keep the part we can point at
        return a
    return Span(a.file, a.line, a.col, b.end_line, b.end_col)


def _nodes(children) -> list:
    return [c for c in children if not isinstance(c, Token)]


def _origin(name_token) -> str:
    return "include" if name_token.included else "file"


def _check_unique(items, what: str) -> None:
    """Raise at the second of two items (Member/Param/Arg) with the same name."""
    seen: dict[str, object] = {}
    for item in items:
        name = item.name
        if name is None:
            continue
        first = seen.get(name)
        if first is not None:
            where = getattr(item, "name_span", None) or item.span
            first_where = getattr(first, "name_span", None) or first.span
            raise ParseError(f"duplicate {what} '{name}'", where, hint=f"'{name}' is first defined at {first_where}")
        seen[name] = item


class AstBuilder:
    """One method per grammar rule (or alias); each returns the AST node for that rule."""

    # ---- entry points -------------------------------------------------------------------
    def file(self, children):
        return children[0]  # the member list; the parser wraps it in a Record spanning the file

    def expression(self, children):
        return children[0]

    def override(self, children):
        *names, _equal, expr = children
        name_tokens = [t for t in names if t.type == "IDENT"]
        name = ".".join(t.value for t in name_tokens)
        return ast.Member(span_between(names[0], expr), name, expr,
                          name_span=span_between(names[0], name_tokens[-1]), origin="override")

    # ---- records and members ------------------------------------------------------------
    def members(self, children):
        members = [c for c in children if isinstance(c, ast.Member)]
        _check_unique(members, "member definition")
        return members

    def member_plain(self, children):
        name, _equal, expr = children
        return ast.Member(span_between(name, expr), name.value, expr, name_span=span_of(name),
                          origin=_origin(name))

    def member_function(self, children):
        name, (opening, params), _equal, body = children
        fn = ast.Lambda(span_between(opening, body), params, body, name=name.value)
        return ast.Member(span_between(name, body), name.value, fn, name_span=span_of(name),
                          origin=_origin(name))

    def member_array(self, children):
        name, _lsqb, index, _colon, first, _dotdot, last, _rsqb, _equal, body = children
        init = ast.Lambda(span_between(index, body), [ast.Param(span_of(index), index.value)], body,
                          name=name.value)
        ctor = ast.ArrayCtor(span_between(name, body), first, last, init)
        return ast.Member(span_between(name, body), name.value, ctor, name_span=span_of(name),
                          origin=_origin(name))

    def params(self, children):
        params = _nodes(children)
        _check_unique(params, "parameter")
        return children[0], params

    def param(self, children):
        name = children[0]
        default = children[2] if len(children) == 3 else None
        return ast.Param(span_between(name, children[-1]), name.value, default)

    def record(self, children):
        opening, members, closing = children
        return ast.Record(span_between(opening, closing), members)

    # ---- operators ----------------------------------------------------------------------
    def lambda_(self, children):
        name, _arrow, body = children
        return ast.Lambda(span_between(name, body), [ast.Param(span_of(name), name.value)], body)

    def colon(self, children):
        left, _colon, right = children
        # n-ary and flattened on the left, as CNTK does: `(a:b):c` is one array of three.
        if isinstance(left, ast.ArrayLit):
            left.items.append(right)
            left.span = span_between(left, right)
            return left
        return ast.ArrayLit(span_between(left, right), [left, right])

    def binop(self, children):
        left, op, right = children
        return ast.BinOp(span_between(left, right), op.value, left, right)

    def unop(self, children):
        op, operand = children
        return ast.UnaryOp(span_between(op, operand), op.value, operand)

    def dot(self, children):
        obj, _dot, name = children
        return ast.Dot(span_between(obj, name), obj, name.value)

    def index(self, children):
        obj, _lsqb, index, closing = children
        return ast.Index(span_between(obj, closing), obj, index)

    def call(self, children):
        fn, opening, args, closing = children
        _check_unique(args, "named argument")
        return ast.Call(span_between(fn, closing), fn, args, brace=opening.type == "LBRACE")

    def args(self, children):
        return _nodes(children)

    def arg(self, children):
        if len(children) == 3:
            name, _equal, value = children
            return ast.Arg(span_between(name, value), name.value, value)
        value = children[0]
        return ast.Arg(value.span, None, value)

    # ---- primaries ----------------------------------------------------------------------
    def number(self, children):
        token = children[0]
        text = token.value
        try:
            value = float(int(text, 16)) if text[:2] in ("0x", "0X") else float(text)
        except OverflowError:
            value = math.inf
        if math.isinf(value):
            shown = text if len(text) <= 24 else text[:20] + "..."
            raise ParseError(f"number {shown} is too large", span_of(token),
                             hint="numbers are double-precision floats (at most about 1.8e308)")
        return ast.Number(span_of(token), value)

    def string(self, children):
        token = children[0]
        content = token.value[1:-1]
        if "$" not in content or not _INTERPOLATION.search(content):
            return ast.String(span_of(token), content)
        return ast.Interp(span_of(token), _interpolation_parts(token, content))

    def boolean(self, children):
        token = children[0]
        return ast.Bool(span_of(token), token.type == "TRUE")

    def ident(self, children):
        token = children[0]
        return ast.Ident(span_of(token), token.value)

    def paren(self, children):
        return children[1]  # parentheses leave no trace in the tree

    def fsharp_array(self, children):
        return ast.FSharpArray(span_between(children[0], children[-1]), _nodes(children))

    def if_(self, children):
        keyword, cond, _then, then, _else, else_ = children
        return ast.If(span_between(keyword, else_), cond, then, else_)

    def new(self, children):
        keyword, type_name, operand = children
        return ast.New(span_between(keyword, operand), type_name.value, operand)

    def array_ctor(self, children):
        keyword, _lsqb, first, _dotdot, last, _rsqb, _lpar, fn, closing = children
        return ast.ArrayCtor(span_between(keyword, closing), first, last, fn)


def _interpolation_parts(token, content: str) -> list:
    """Split a string literal into String and Ident parts at each `$name$`."""
    parts: list = []
    cursor = 0
    for m in _INTERPOLATION.finditer(content):
        if m.start() > cursor:
            parts.append(ast.String(_inner_span(token, content, cursor, m.start()), content[cursor:m.start()]))
        parts.append(ast.Ident(_inner_span(token, content, m.start(), m.end()), m.group(1)))
        cursor = m.end()
    if cursor < len(content):
        parts.append(ast.String(_inner_span(token, content, cursor, len(content)), content[cursor:]))
    return parts


def _inner_span(token, content: str, start: int, end: int) -> Span:
    """The span of content[start:end]; content begins one character after the opening quote."""
    def position(offset: int) -> tuple[int, int]:
        newlines = content.count("\n", 0, offset)
        if newlines == 0:
            return token.line, token.column + 1 + offset
        return token.line + newlines, offset - content.rindex("\n", 0, offset)

    line, col = position(start)
    end_line, end_col = position(end)
    return Span(token.file, line, col, end_line, end_col)
