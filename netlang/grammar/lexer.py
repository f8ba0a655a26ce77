"""The BrainScript scanner: source text -> tokens for the LALR parser, with `include` spliced in.

The scanner is hand-written (one master regular expression) rather than Lark's lexer because three
things happen at the token level that a grammar cannot express:

* `include "path"` is replaced by the tokens of the named file, wherever it stands (CNTK does this
  inside its lexer too), so included text can even complete an expression;
* `$name$` outside a string is a plain identifier;
* unterminated strings and block comments need their own messages, at the opening quote or `/*`.

Every token carries the name of the file it came from (`token.file`), so spans inside included
text point into the included file. Tokens of included files are `IncludedToken`s, which lets the
tree builder mark the members they define with `origin="include"`.

Text that is not a file of its own (the network of a `.cntk` file after CNTK's `$name$` substitution,
grammar/legacy.py) is scanned with a `SourceMap`, which gives each character's place in the file the
user wrote, so spans point there.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from lark import Token

from netlang import sources
from netlang.errors import ConfigError, IncludeError, ParseError, Span


class SourceToken(Token):
    """A Lark token that also knows its file name."""

    included = False

    def span(self) -> Span:
        return Span(self.file, self.line, self.column, self.end_line, self.end_column)


class IncludedToken(SourceToken):
    """A token read from a file brought in by `include`."""

    included = True


KEYWORDS = {
    "include": "INCLUDE",  # never reaches the parser: the scanner splices the file in its place
    "new": "NEW", "with": "WITH", "true": "TRUE", "false": "FALSE",
    "if": "IF", "then": "THEN", "else": "ELSE", "array": "ARRAY",
}

PUNCTUATION = {
    "[|": "LFSHARP", "|]": "RFSHARP", "**": "POW", ".*": "DOTSTAR", "||": "OROR", "&&": "ANDAND",
    "<<": "SHL", ">>": "SHR", "==": "EQEQ", "!=": "NOTEQ", "<=": "LE", ">=": "GE", "=>": "ARROW",
    "..": "DOTDOT",
    "+": "PLUS", "-": "MINUS", "*": "STAR", "/": "SLASH", "%": "PERCENT", "!": "BANG",
    "<": "LT", ">": "GT", "=": "EQUAL", ":": "COLON", ";": "SEMI", ",": "COMMA", ".": "DOT",
    "(": "LPAR", ")": "RPAR", "[": "LSQB", "]": "RSQB", "{": "LBRACE", "}": "RBRACE",
}

# Order matters: comments before '/', numbers before '.', two-character punctuation before one.
# The OPEN_* alternatives only match when the complete form did not, i.e. for unterminated text.
_SCANNER = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in [
    ("SPACE", r"\s+"),
    ("LINE_COMMENT", r"(?:#|//)[^\n]*"),
    ("BLOCK_COMMENT", r"/\*.*?\*/"),
    ("OPEN_COMMENT", r"/\*"),
    # `1..2` is `1` `..` `2`: a '.' directly followed by another '.' is not a decimal point.
    ("NUMBER", r"0[xX][0-9a-fA-F]+|(?:[0-9]+(?:\.(?!\.)[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"),
    ("NAME", r"[^\W\d]\w*"),
    ("STRING", r'"[^"]*"|\'[^\']*\''),
    ("OPEN_STRING", r"[\"']"),
    ("DOLLAR_NAME", r"\$[^\W\d]\w*\$"),
    ("PUNCT", "|".join(re.escape(p) for p in sorted(PUNCTUATION, key=len, reverse=True))),
]), re.DOTALL)

_CHARACTER_HINTS = {
    "|": "logical or is written '||'",
    "&": "logical and is written '&&'",
    "^": "the power operator is '**'",
    "?": "conditionals are written 'if c then a else b'",
    "$": "outside a string, '$name$' must enclose a plain name; or write the name directly",
    "\\": "strings have no escape sequences; build strings with '+' instead",
}


@dataclass
class ScanState:
    """What one parse shares across all the files it reads."""

    include_path: Sequence[str]
    # Files being read, outermost first: (real path, span of the include that opened it or None, name).
    open_files: list = field(default_factory=list)
    # The last two tokens handed to the parser, for error messages ("after '.'").
    previous: SourceToken | None = None
    last: SourceToken | None = None
    end_of_input: Span | None = None


@dataclass
class SourceMap:
    """Where each character of a text came from: `starts[i]` is (file, line, col) of character i,
    `ends[i]` the position just past it. Characters of a substituted `$name$` value all map to the
    `$name$` they replaced."""

    starts: list
    ends: list

    def span(self, start: int, stop: int) -> Span:
        """The span of text[start:stop] (at least one character; clamped to the text)."""
        last = len(self.starts) - 1
        first = min(max(start, 0), last)
        file, line, col = self.starts[first]
        end_file, end_line, end_col = self.ends[min(max(stop - 1, first), last)]
        if end_file != file:
            return Span(file, line, col, line, col + 1)
        return Span(file, line, col, end_line, end_col)


def normalize_newlines(text: str) -> str:
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def tokenize(text: str, name: str, state: ScanState, source_map: SourceMap | None = None) -> Iterator[SourceToken]:
    """Tokens of the root text `name`; records where its input ends for end-of-input errors. With a
    `source_map`, positions are those the map gives (text embedded in another file)."""
    scanned = _scan(text, name, state, SourceToken) if source_map is None else _scan_mapped(text, state, source_map)
    for token in scanned:
        state.previous, state.last = state.last, token
        yield token
    if source_map is not None and text:
        end = source_map.span(len(text) - 1, len(text))
        state.end_of_input = Span(end.file, end.end_line, end.end_col, end.end_line, end.end_col)
        return
    lines = text.split("\n")
    state.end_of_input = Span(name, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 1)


def _scan_mapped(text: str, state: ScanState, source_map: SourceMap) -> Iterator[SourceToken]:
    """`_scan`, with every token and error placed where the source map says its characters came from."""
    try:
        for token in _scan(text, "<embedded>", state, SourceToken):
            if token.file != "<embedded>":      # from an included file: its own positions
                yield token
                continue
            span = source_map.span(token.start_pos, token.end_pos)
            token.file, token.line, token.column = span.file, span.line, span.col
            token.end_line, token.end_column = span.end_line, span.end_col
            yield token
    except ConfigError as err:                  # a syntax error, or an include that failed
        if err.span is not None and err.span.file == "<embedded>":
            err.span = _mapped_span(text, err.span, source_map)
        raise


def _mapped_span(text: str, span: Span, source_map: SourceMap) -> Span:
    """The source-map span of a (line, col) span of `text`."""
    lines = text.split("\n")
    offset = sum(len(line) + 1 for line in lines[:span.line - 1]) + span.col - 1
    return source_map.span(offset, offset + 1)


def _scan(text: str, name: str, state: ScanState, token_class) -> Iterator[SourceToken]:
    match = _SCANNER.match
    keywords, punctuation = KEYWORDS, PUNCTUATION
    pos, end = 0, len(text)
    line, line_start = 1, 0
    include_token: SourceToken | None = None
    while pos < end:
        m = match(text, pos)
        if m is None:
            _fail_character(text[pos], Span(name, line, pos - line_start + 1, line, pos - line_start + 2))
        kind = m.lastgroup
        stop = m.end()
        if kind == "SPACE" or kind == "LINE_COMMENT" or kind == "BLOCK_COMMENT":
            newlines = text.count("\n", pos, stop)
            if newlines:
                line += newlines
                line_start = text.rindex("\n", pos, stop) + 1
            pos = stop
            continue
        value = m.group()
        start_line, col = line, pos - line_start + 1
        if kind == "NAME":
            token_type = keywords.get(value, "IDENT")
        elif kind == "PUNCT":
            token_type = punctuation[value]
        elif kind == "NUMBER" or kind == "STRING":
            token_type = kind
        elif kind == "DOLLAR_NAME":
            token_type, value = "IDENT", value[1:-1]
        elif kind == "OPEN_STRING":
            raise ParseError("string without closing quotation mark", Span(name, line, col, line, col + 1),
                             hint=f"add the closing {value}; a string may span lines but must be closed")
        else:  # OPEN_COMMENT
            raise ParseError("comment without closing */", Span(name, line, col, line, col + 2))
        if kind == "STRING" and "\n" in value:
            line += value.count("\n")
            line_start = text.rindex("\n", pos, stop) + 1
        token = token_class(token_type, value, pos, start_line, col, line, stop - line_start + 1, stop)
        token.file = name
        pos = stop
        if include_token is not None:
            if token_type != "STRING":
                _fail_include_syntax(include_token)
            yield from _include(include_token, token, state)
            include_token = None
        elif token_type == "INCLUDE":
            include_token = token
        else:
            yield token
    if include_token is not None:
        _fail_include_syntax(include_token)


def _fail_character(char: str, span: Span):
    shown = repr(char) if not char.isprintable() else f"'{char}'"
    raise ParseError(f"unexpected character {shown}", span, hint=_CHARACTER_HINTS.get(char))


def _fail_include_syntax(include_token: SourceToken):
    raise ParseError("'include' must be followed by a quoted string", include_token.span(),
                     hint='write include "file.net"')


def _include(include_token: SourceToken, path_token: SourceToken, state: ScanState):
    """Scan the file named by `include "path"` in place of the two tokens."""
    site = Span(include_token.file, include_token.line, include_token.column,
                path_token.end_line, path_token.end_column)
    requested = path_token.value[1:-1]
    path = find_include(requested, include_token.file, state.include_path, site)
    real = os.path.realpath(path)
    for open_real, opened_at, _ in state.open_files:
        if open_real == real:
            first = f"included at {opened_at}" if opened_at else "it is the file being parsed"
            chain = " -> ".join([name for _, _, name in state.open_files] + [path])
            raise IncludeError(f"include cycle: '{requested}' is already being read ({first}); "
                               f"chain: {chain}", site, hint="remove one of the two includes")
    try:
        with open(path, encoding="utf-8") as handle:
            text = normalize_newlines(handle.read())
    except (OSError, UnicodeDecodeError) as exc:
        raise IncludeError(f"cannot read include file '{path}': {exc}", site) from None
    sources.register(path, text)
    state.open_files.append((real, site, path))
    yield from _scan(text, path, state, IncludedToken)
    state.open_files.pop()


def find_include(requested: str, including_file: str, include_path: Sequence[str], site: Span) -> str:
    """Resolve an include: the including file's directory, then the include path, then the CWD."""
    if os.path.isabs(requested):
        candidates, searched = [requested], []
    else:
        searched = []
        if not including_file.startswith("<"):
            searched.append(os.path.dirname(including_file) or ".")
        searched.extend(include_path)
        candidates = [os.path.normpath(os.path.join(d, requested)) for d in searched] + [requested]
        searched.append("the current directory")
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    where = f" (searched: {', '.join(searched)})" if searched else ""
    raise IncludeError(f"include file '{requested}' not found{where}", site,
                       hint="check the file name, or add its directory to the include path")
