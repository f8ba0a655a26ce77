"""Text -> AST: the public entry points of the BrainScript front end.

    parse_text(text, name, include_path, origin) -> ast.Record      a whole file (an implicit record)
    parse_file(path, include_path)               -> ast.Record
    parse_expression(text, name)                 -> ast.Node        one expression (command-line value)
    parse_member_text(text, name)                -> ast.Member      `a.b.c=expr` (command-line override)
    parse_embedded(text, source_map, include_path) -> ast.Node      one expression written inside another
                                                                    file (the network of a .cntk file)

The scanner (`lexer.py`) feeds Lark's LALR(1) parser (`netlang.lark`), which calls `AstBuilder`
(`ast_builder.py`) on every reduction. Whatever goes wrong comes out as a ParseError or
IncludeError with the span of the offending token; no Lark exception escapes.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Iterable, Sequence

from lark import Lark, Token
from lark import __version__ as lark_version
from lark.exceptions import LarkError, UnexpectedToken
from lark.grammar import Rule
from lark.lexer import Lexer, TerminalDef

from netlang import sources
from netlang.errors import ConfigError, ParseError, Span
from netlang.grammar import ast, cache
from netlang.grammar.ast_builder import AstBuilder
from netlang.grammar.lexer import KEYWORDS, PUNCTUATION, ScanState, SourceMap, normalize_newlines, tokenize

GRAMMAR_PATH = Path(__file__).with_name("netlang.lark")

_lark: Lark | None = None
_lark_lock = threading.Lock()


class _TokenFeed(Lexer):
    """Lark's side of the scanner: the 'text' Lark is given is already an iterator of tokens."""

    def __init__(self, lexer_conf):
        pass

    def lex(self, tokens: Iterable):
        return tokens


def _parser() -> Lark:
    """The LALR parser, built once per process; the table (~0.1 s to build) is cached on disk."""
    global _lark
    if _lark is None:
        with _lark_lock:
            if _lark is None:
                _lark = _cached_parser() or _build_parser()
    return _lark


_LARK_OPTIONS = dict(parser="lalr", lexer=_TokenFeed, start=["file", "expression", "override"],
                     keep_all_tokens=True, maybe_placeholders=False)
# What in Lark's table is code, not data: stored by name, given back by us when a cached table is loaded.
_TABLE_CODE = {"token feed": _TokenFeed}


def _table_key() -> str:
    return hashlib.sha256(f"{cache.front_end_fingerprint()} lark {lark_version}".encode()).hexdigest()


def _build_parser() -> Lark:
    parser = Lark(GRAMMAR_PATH.read_text(encoding="utf-8"), transformer=AstBuilder(), **_LARK_OPTIONS)
    # Lark's own cache is a pickle; we store its serialised table as JSON instead.
    try:
        data, memo = parser.memo_serialize([TerminalDef, Rule])
        data["options"] = {k: v for k, v in data["options"].items() if k != "transformer"}
        cache.write_entry("lalr", _table_key(), {"data": cache.plain_to_json(data, _TABLE_CODE),
                                                 "memo": cache.plain_to_json(memo, _TABLE_CODE)})
    except (TypeError, ValueError, KeyError, AttributeError):
        pass                                   # a table JSON cannot hold: no cache, same parser
    return parser


def _cached_parser() -> Lark | None:
    document = cache.read_entry("lalr", _table_key())
    if not isinstance(document, dict):
        return None
    try:
        data = cache.plain_from_json(document["data"], _TABLE_CODE)
        memo = cache.plain_from_json(document["memo"], _TABLE_CODE)
        return Lark._load_from_dict(data, memo, transformer=AstBuilder())
    except Exception:  # noqa: BLE001 - a damaged or foreign table: build it again
        return None


# ---- public API ---------------------------------------------------------------------------

def parse_text(text: str, name: str = "<string>", include_path: Sequence[str] = (),
               origin: str = "file") -> ast.Record:
    """Parse a whole config text; `name` is the file name that spans carry. `include` looks next to
    `name` first, then in `include_path`, then in the working directory."""
    members, state = _run("file", text, name, include_path)
    end = state.end_of_input
    record = ast.Record(Span(name, 1, 1, end.line, end.col), members)
    if origin != "file":
        _set_origin(record, origin)
    return record


def parse_file(path: str, include_path: Sequence[str] = ()) -> ast.Record:
    """Parse the config file at `path`; its includes are searched next to it first."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' not found",
                          hint=f"check the path (relative paths start at {os.getcwd()})") from None
    except IsADirectoryError:
        raise ConfigError(f"'{path}' is a directory, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc.strerror}") from None
    return parse_text(text, path, include_path)


def parse_expression(text: str, name: str = "<override>") -> ast.Node:
    """Parse one expression, e.g. the value of a command-line `key=value`."""
    node, _ = _run("expression", text, name)
    return node


def parse_member_text(text: str, name: str) -> ast.Member:
    """Parse a command-line assignment `a.b.c=expr`; the Member's name is the dotted path."""
    member, _ = _run("override", text, name)
    _set_origin(member, "override")
    return member


def parse_embedded(text: str, source_map: SourceMap, include_path: Sequence[str] = ()) -> ast.Node:
    """Parse one expression that is part of another file (the network of a `.cntk` file after CNTK's
    `$name$` substitution); `source_map` places each character in that file, so spans point there."""
    node, _ = _run("expression", text, "<embedded>", include_path, source_map)
    return node


# ---- internals ----------------------------------------------------------------------------

def _run(start: str, text: str, name: str, include_path: Sequence[str] = (), source_map: SourceMap | None = None):
    """Parse `text` from grammar rule `start`; returns (result, scan state)."""
    text = normalize_newlines(text)
    state = ScanState(include_path=list(include_path))
    if source_map is None:
        sources.register(name, text)
    if not name.startswith("<") and os.path.isfile(name):
        state.open_files.append((os.path.realpath(name), None, name))  # so it cannot include itself
    try:
        return _parser().parse(tokenize(text, name, state, source_map), start=start), state
    except UnexpectedToken as exc:
        raise _syntax_error(exc, state, start) from None
    except LarkError as exc:  # not raised with our scanner feeding tokens; kept so none escapes
        raise ParseError(f"syntax error: {exc}", _last_span(state)) from None


def _set_origin(root: ast.Node, origin: str) -> None:
    """Members not brought in by `include` take `origin` (stdlib, override)."""
    for node in ast.walk(root):
        if isinstance(node, ast.Member) and node.origin == "file":
            node.origin = origin


def _last_span(state: ScanState) -> Span | None:
    return state.last.span() if state.last is not None else state.end_of_input


# ---- syntax error messages ----------------------------------------------------------------

_TOKEN_TEXT = {kind: f"'{text}'" for text, kind in PUNCTUATION.items()}
_TOKEN_TEXT.update({kind: f"'{word}'" for word, kind in KEYWORDS.items()})
_TOKEN_TEXT.update({"IDENT": "an identifier", "NUMBER": "a number", "STRING": "a string",
                    "$END": "the end of the input"})

# Tokens that can begin an expression; when all of them are acceptable the parser wants an operand.
_EXPRESSION_START = {"NUMBER", "STRING", "TRUE", "FALSE", "IDENT", "LPAR", "LBRACE", "LSQB", "LFSHARP",
                     "IF", "NEW", "ARRAY", "MINUS", "PLUS", "BANG"}
# Tokens that continue a complete expression (binary and postfix operators); they are left out of
# "expected ..." lists because any complete expression allows them.
_CONTINUATION = {"STAR", "SLASH", "DOTSTAR", "POW", "PERCENT", "PLUS", "MINUS", "WITH", "EQEQ", "NOTEQ",
                 "LT", "LE", "GT", "GE", "ANDAND", "OROR", "SHL", "SHR", "COLON", "DOT", "LSQB",
                 "LPAR", "LBRACE", "ARROW"}
_ORDER = ["EQUAL", "COMMA", "SEMI", "RPAR", "RSQB", "RBRACE", "RFSHARP", "THEN", "ELSE", "DOTDOT",
          "IDENT", "COLON", "LPAR", "LBRACE", "LSQB", "$END"]


def _describe(token) -> str:
    kind = token.type
    if kind == "$END":
        return "end of input"
    if kind == "IDENT":
        return f"identifier '{token.value}'"
    if kind == "NUMBER":
        return f"number {token.value}"
    if kind == "STRING":
        text = token.value if len(token.value) <= 30 else token.value[:27] + "..." + token.value[0]
        return f"string {text}".replace("\n", "\\n")
    if kind in KEYWORDS.values():
        return f"keyword '{token.value}'"
    return f"'{token.value}'"


def _syntax_error(exc: UnexpectedToken, state: ScanState, start: str) -> ParseError:
    token = exc.token
    at_end = token.type == "$END"
    span = state.end_of_input if at_end else token.span()
    previous = state.last if at_end else state.previous
    expected = _acceptable(exc)
    message, hint = _explain(token, expected, previous, start)
    opening = _innermost_open_bracket(exc)
    if hint is None and opening is not None and _CLOSER[opening.type] in expected:
        hint = f"the '{opening.value}' at {opening.span()} is still open"
    return ParseError(message, span, hint=hint)


_CLOSER = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE", "LFSHARP": "RFSHARP"}


def _innermost_open_bracket(exc: UnexpectedToken):
    """The last opening bracket still on the parser's stack: that one is not closed yet."""
    try:
        stack = exc.interactive_parser.parser_state.value_stack
    except AttributeError:
        return None
    for item in reversed(stack):
        if isinstance(item, Token) and item.type in _CLOSER:
            return item
    return None


def _acceptable(exc: UnexpectedToken) -> set:
    """The tokens that could have come instead. LALR's merged states over-approximate this set, so
    ask Lark to try each one on a copy of the parser (cheap, and only done once per error)."""
    try:
        return set(exc.interactive_parser.accepts())
    except Exception:
        return set(exc.expected)


def _explain(token, expected: set, previous, start: str) -> tuple[str, str | None]:
    got = _describe(token)
    kind = token.type
    if kind == "SEMI" and previous is not None and previous.type == "SEMI":
        return "unexpected ';' — members are separated by at most one ';'", "remove the extra ';'"
    if kind == "ARROW":
        return ("unexpected '=>' — its left side must be a single identifier",
                "a lambda inside an operator expression needs parentheses, e.g. (x => x * 2) : g")
    if _EXPRESSION_START <= expected:
        after = f" after {_describe(previous)}" if previous is not None else ""
        return f"unexpected {got} — expected an expression{after}", _keyword_hint(token)
    if previous is not None and previous.type == "DOT" and expected <= {"IDENT"}:
        return "identifier expected after '.'", f"found {got}"
    if "$END" in expected and kind != "$END":
        if start != "file":
            return f"unexpected {got} after the end of the expression", _closing_hint(token)
        return (f"junk at end of source: unexpected {got}",
                _keyword_hint(token) or _closing_hint(token) or
                "a member definition 'name = expression' was expected here")
    listed = _list_expected(expected)
    if not listed:
        return f"unexpected {got}", None
    hint = _keyword_hint(token)
    if "ELSE" in expected:
        hint = "'if' needs both branches: if cond then a else b"
    elif expected <= {"EQUAL", "LPAR", "LBRACE", "LSQB"} and previous is not None and previous.type == "IDENT":
        hint = f"a member is defined as {previous.value} = expression"
    elif expected in ({"IDENT", "RPAR"}, {"IDENT", "RBRACE"}):
        hint = "the parameters of a function definition are names, optionally with a default: F(x, y = 1) = ..."
    elif expected == {"IDENT"} and previous is not None and previous.type == "LSQB":
        hint = "an array member is defined as name[i : first..last] = expression of i"
    return f"unexpected {got} — expected {listed}", hint


def _list_expected(expected: set) -> str:
    """'x', 'x or y', 'x, y or z' for the tokens a reader would think of."""
    wanted = set(expected) - {"$END"}
    if "STAR" in expected:
        # A complete expression came before: any operator could follow, which is noise here;
        # and `name =` (a named argument) is rarely what was meant after one.
        wanted -= _CONTINUATION
        if "COMMA" in wanted:
            wanted.discard("EQUAL")
    ordered = [t for t in _ORDER if t in wanted] + sorted(wanted - set(_ORDER))
    names = [_TOKEN_TEXT.get(t, t) for t in ordered]
    if not names:
        return "an operator" if "STAR" in expected else ""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _keyword_hint(token) -> str | None:
    if token.type in KEYWORDS.values() and token.type not in ("TRUE", "FALSE"):
        return f"'{token.value}' is a reserved word and cannot be used as a name"
    return None


def _closing_hint(token) -> str | None:
    if token.type in ("RPAR", "RSQB", "RBRACE", "RFSHARP"):
        return f"this '{token.value}' has no matching opening bracket"
    return None
