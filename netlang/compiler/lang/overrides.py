"""Command-line overrides: `key=value` arguments applied to a file's AST before evaluation.

    netlang train cfg.net SGD.maxEpochs=2 train=[SGD=[minibatchSize=64]] modelPath=out/model.dnn

* The key is a name or a dotted path of names, matched case-insensitively against the members
  of the file (CNTK config keys are case-insensitive); missing members are added (the config
  schema rejects unknown keys later, with "did you mean").
* The value is parsed as an expression. A record value (CNTK's block form `[k=v]`) is merged into
  an existing record member by member; any other value replaces. Later overrides win.
* A value that does not parse, or that names identifiers defined nowhere (`out/model.dnn`,
  `precision=float`), is taken as a string, with `$name$` interpolated as in the file — unless it
  begins with a bracket (`train=[SGD=[maxEpochs=2`): that was meant as a record or an expression,
  and its syntax error is reported on the override.

For a legacy `.cntk` config (`legacy=True`) a value is read as CNTK reads one more config line:
text (quoted or not), a `[ … ]` block, or the network's BrainScript (grammar/legacy.py); its
`$name$` are substituted after all overrides are applied, like the file's own.

Overridden members get `origin="override"` and spans in the pseudo-file `<command line>`, whose
line N is the N-th override, so errors in an override point at the command line.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Sequence

from netlang import sources
from netlang.compiler.lang.builtins import HELPER_NAMES
from netlang.errors import ConfigError, ParseError, Span, UsageError
from netlang.grammar import ast
from netlang.grammar.legacy import parse_override_value
from netlang.grammar.library import load_stdlib
from netlang.grammar.parser import parse_expression

COMMAND_LINE = "<command line>"

_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_INTERPOLATION = re.compile(r"\$([A-Za-z_]\w*)\$")


def apply_overrides(file_ast: ast.Record, overrides: Sequence[str], legacy: bool = False) -> ast.Record:
    """`file_ast` with every `key=value` of `overrides` applied in order (the input is not modified);
    `legacy`: the values are read by CNTK's legacy config rules."""
    known = set() if legacy else _known_names(file_ast)
    result = file_ast
    sources.register(COMMAND_LINE, "\n".join(overrides))     # for errors in legacy values
    for line, argument in enumerate(overrides, start=1):
        key, value_text, value_offset = _split(argument)
        if legacy:
            value = _legacy_value(key, value_text, line, value_offset)
        else:
            try:
                value = _parse_value(value_text, line, value_offset, known)
            except ParseError:
                sources.register(COMMAND_LINE, "\n".join(overrides))   # the parse registered the value alone
                raise
        name_span = Span(COMMAND_LINE, line, 1, line, len(key) + 1)
        member_span = Span(COMMAND_LINE, line, 1, line, len(argument) + 1)
        for keys in _routes(result, key.split(".")):
            result = _assign(result, keys, value, name_span, member_span)
    sources.register(COMMAND_LINE, "\n".join(overrides))    # again: parsing a value registered it alone
    return result


def _routes(file_ast: ast.Record, keys: list[str]) -> list[list[str]]:
    """Where a dotted override lands. `SGD.maxEpochs=3` names no top-level key, but the `SGD`
    block of command blocks: it then applies to every top-level block that has such a member
    (a command-line convenience; a top-level key of that name always wins)."""
    if len(keys) < 2 or _find(file_ast.members, keys[0]) is not None:
        return [keys]
    blocks = [m.name for m in file_ast.members
              if isinstance(m.expr, ast.Record) and _find(m.expr.members, keys[0]) is not None]
    return [[block] + keys for block in blocks] or [keys]


def _split(argument: str) -> tuple[str, str, int]:
    """(key, value text, offset of the value in the argument) of one `key=value` argument."""
    equals = argument.find("=")
    key = argument[:equals].strip() if equals > 0 else ""
    if not key:
        raise UsageError(f"malformed override '{argument}': expected key=value",
                         hint="e.g. SGD.maxEpochs=2 or train=[SGD=[maxEpochs=2]]")
    if not _KEY.fullmatch(key):
        raise UsageError(f"malformed override '{argument}': '{key}' is not a name or a dotted path of names",
                         hint="e.g. SGD.maxEpochs=2")
    return key, argument[equals + 1:], equals + 1


# --- values ------------------------------------------------------------------------------------

def _legacy_value(key: str, text: str, line: int, offset: int) -> ast.Node:
    value = parse_override_value(key.split(".")[-1], text, COMMAND_LINE, line, offset + 1)
    for inner in ast.walk(value):
        if isinstance(inner, ast.Member):
            inner.origin = "override"
    return value


def _parse_value(text: str, line: int, offset: int, known: set[str]) -> ast.Node:
    whole = Span(COMMAND_LINE, line, offset + 1, line, offset + len(text) + 1)
    try:
        node = parse_expression(text, COMMAND_LINE)
    except ConfigError as err:
        if _meant_as_expression(text):
            raise _override_syntax_error(err, text, line, offset) from None
        return _string_value(text.strip(), whole)
    node = _strings_for_unknown_names(node, text, known)
    _relocate(node, line, offset)
    for inner in ast.walk(node):
        if isinstance(inner, ast.Member):
            inner.origin = "override"
    return node


_OPENERS, _CLOSERS = "([{", ")]}"


def _meant_as_expression(text: str) -> bool:
    """A value that begins with a bracket: a record (`[SGD=[…]]`, `{…}`) or a parenthesised expression,
    never a file name or a word (`a b (` stays a string)."""
    return text.lstrip()[:1] in tuple(_OPENERS)


def _unbalanced(text: str) -> bool:
    depth, quote = 0, None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth -= 1
            if depth < 0:
                return True
    return depth != 0


def _override_syntax_error(err: ConfigError, text: str, line: int, offset: int) -> ParseError:
    span = _moved(err.span, line, offset) if err.span is not None else Span(COMMAND_LINE, line, offset + 1)
    hint = err.hint
    if _unbalanced(text):
        hint = ("close every bracket the value opens, e.g. train=[SGD=[maxEpochs=2]], and quote the whole "
                "argument for the shell")
    return ParseError(f"in override {line}: {err.message}", span, hint=hint)


def _strings_for_unknown_names(node: ast.Node, text: str, known: set[str]) -> ast.Node:
    """Replace values that name undefined identifiers by their text; inside records per member."""
    if isinstance(node, ast.Record):
        for member in node.members:
            member.expr = _strings_for_unknown_names(member.expr, text, known)
        return node
    if not _names_unknown(node, known):
        return node
    span = node.span
    if span.line != 1 or span.end_line != 1 or span.end_col <= span.col:
        return node  # cannot cut its text out reliably; evaluation will report the unknown name
    return _string_value(text[span.col - 1:span.end_col - 1], span)


def _names_unknown(node: ast.Node, known: set[str]) -> bool:
    nodes = list(ast.walk(node))
    local = {n.name for n in nodes if isinstance(n, (ast.Param, ast.Member))}
    return any(isinstance(n, ast.Ident) and n.name not in known and n.name not in local for n in nodes)


def _string_value(text: str, span: Span) -> ast.Node:
    """A string, with `$name$` interpolated like a string literal in the file."""
    if not _INTERPOLATION.search(text):
        return ast.String(span, text)
    parts: list[ast.Node] = []
    position = 0
    for match in _INTERPOLATION.finditer(text):
        if match.start() > position:
            parts.append(ast.String(span, text[position:match.start()]))
        parts.append(ast.Ident(span, match.group(1)))
        position = match.end()
    if position < len(text):
        parts.append(ast.String(span, text[position:]))
    return ast.Interp(span, parts)


def _known_names(file_ast: ast.Record) -> set[str]:
    """Every name an override value could refer to: the file's, the library's, the helpers'."""
    names = set(HELPER_NAMES)
    for tree in (file_ast, load_stdlib()):
        names.update(n.name for n in ast.walk(tree) if isinstance(n, (ast.Member, ast.Param)))
    return names


def _relocate(node: ast.Node, line: int, offset: int) -> None:
    """Move spans from the value's own text to line `line` of the command-line pseudo-file."""
    for inner in ast.walk(node):
        inner.span = _moved(inner.span, line, offset)
        if isinstance(inner, ast.Member) and inner.name_span is not None:
            inner.name_span = _moved(inner.name_span, line, offset)


def _moved(span: Span, line: int, offset: int) -> Span:
    end_line = span.end_line or span.line
    return Span(COMMAND_LINE, line + span.line - 1, span.col + offset if span.line == 1 else span.col,
                line + end_line - 1, span.end_col + offset if end_line == 1 else span.end_col)


# --- assignment --------------------------------------------------------------------------------

def _find(members: list[ast.Member], name: str) -> int | None:
    """Index of the member called `name`, exact match first, then case-insensitive."""
    lowered = None
    for i, member in enumerate(members):
        if member.name == name:
            return i
        if lowered is None and member.name.lower() == name.lower():
            lowered = i
    return lowered


def _assign(record: ast.Record, keys: list[str], value: ast.Node, name_span: Span,
            member_span: Span) -> ast.Record:
    """A copy of `record` with `keys` (a dotted path) set to `value`."""
    members = list(record.members)
    index = _find(members, keys[0])
    existing = members[index] if index is not None else None
    name = existing.name if existing is not None else keys[0]
    if len(keys) > 1:
        if existing is None:
            inner = ast.Record(member_span, [])
        elif isinstance(existing.expr, ast.Record):
            inner = existing.expr
        else:
            raise UsageError(f"cannot override '{'.'.join(keys)}': '{name}' is not a record written "
                             f"in braces in the config", hint=f"override '{name}' as a whole instead")
        expr = _assign(inner, keys[1:], value, name_span, member_span)
    elif existing is not None and isinstance(existing.expr, ast.Record) and isinstance(value, ast.Record):
        expr = existing.expr
        for update in value.members:  # block form: merge member by member
            expr = _assign(expr, [update.name], update.expr, update.name_span or update.span, update.span)
    else:
        expr = value
    if existing is None:
        members.append(ast.Member(member_span, name, expr, name_span, origin="override"))
    elif expr is value:  # replaced outright
        members[index] = ast.Member(member_span, name, expr, name_span, origin="override")
    else:  # merged into: the member stays, its record changed
        members[index] = replace(existing, expr=expr)
    return replace(record, members=members)
