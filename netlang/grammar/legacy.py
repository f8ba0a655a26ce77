"""CNTK's legacy configuration layer: a `.cntk` file -> the AST a BrainScript file gives (reference
§0, §1.3, §3.8, §3.9).

A `.cntk` file is not BrainScript as a whole. Its top level and its blocks (`SGD = [ … ]`,
`reader = [ … ]`) are CNTK's older key=value language (Config.h), read here by its rules:

* lines: a line whose first non-blank character is `#` is a comment, and so is a `#` after a blank
  with the rest of its line (`1#INF` is a number); `//` and `/* */` are not comments at this layer;
* `include=a.cntk+b.cntk` at the start of a line splices those files in, each file once;
* items are separated by newlines, `;` and `,` outside brackets and `"` quotes (single quotes are not
  quotes here); the character right after a block's opening bracket may name another separator
  (`[|a=1|b=2]`), as in CNTK;
* `key = value`, keys case-insensitive; a key given again replaces the earlier value, except that a
  `[ … ]` block given again is merged into the earlier block; a bare `key` means `key = true`;
* values are text: quoted (`"…"`, quotes removed, not trimmed) or not (trimmed): `./work`,
  `train.rois.txt`, `g2p-01-$deviceId$`, `%d\\t|w\\s` and Windows paths are plain strings; the schema's
  fields convert them (numbers, booleans, schedules, `:` lists) when they are read, as CNTK does;
  `[ … ]` and `{ … }` values are blocks; a `( … )` value holding blocks is an array of blocks;
* `$name$` in a value is replaced by the text of the top-level key `name` (any case), itself
  substituted. CNTK substitutes the variables of a block when it reads the block from the top level,
  so every `$name$` names a top-level key: `x = $x$` inside a block is the top-level `x`, not a cycle;
* the value of `BrainScriptNetworkBuilder` (also `ExperimentalNetworkBuilder`, and netlang's `network`)
  is BrainScript, parsed after substitution (so `include "$ConfigDir$/Macros.bs"` works) with spans in
  this file; `$name$` is not substituted in the files it includes, as in CNTK.

Reading is two steps, so that command-line overrides act like CNTK's extra config lines (a later
setting wins wherever `$name$` uses it): `read_legacy_file` gives a record whose values are still text
(`ast.LegacyText`, `ast.LegacyBrainScript`); overrides change it (compiler/lang/overrides.py, values
read by `parse_override_value`); `resolve` substitutes and parses. A value that cannot be resolved
becomes an `ast.Failure`: CNTK reads a value only when an action asks for it, so its error is
raised only if the value is used.
"""
from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import replace

from netlang import sources
from netlang.errors import ConfigError, EvalError, IncludeError, ParseError, Span, suggest
from netlang.grammar import ast
from netlang.grammar.lexer import SourceMap, normalize_newlines
from netlang.grammar.parser import parse_embedded

LEGACY_SUFFIXES = (".cntk",)

# Keys whose value is BrainScript, not legacy text (lower case).
NETWORK_KEYS = frozenset({"brainscriptnetworkbuilder", "experimentalnetworkbuilder", "network"})

_OPENERS = {"[": "]", "{": "}", "(": ")", '"': '"'}
_BRAINSCRIPT_OPENERS = {**_OPENERS, "'": "'"}     # in a network, single quotes delimit strings too
_CLOSERS = frozenset("]})")
# A character right after a block's opening bracket that replaces ';' as its separator (CNTK's
# custom separators), unless it starts a path (`..`, `./`, `.\`, `\\`).
_CUSTOM_SEPARATORS = frozenset("`~!@$%^&*_-+|:;,?.")
_PATH_STARTS = ("..", "./", ".\\", "\\\\")
# Characters that end a variable name; a `$` that meets one of them first is a literal `$`.
_NAME_STOPS = frozenset(",/<>?;':\"[]{}\\|!@#%^&*()+=~` \t\n")
_INCLUDE = "include="


def is_legacy_config(name: str) -> bool:
    """Whether `name` is read by the legacy rules (a `.cntk` file)."""
    return name.lower().endswith(LEGACY_SUFFIXES)


# ---- the text: files with includes spliced, and where every line came from ------------------------

class LegacySource:
    """The text of a legacy config (comments removed, `include=` lines replaced by the files they
    name) and, for each of its lines, the file and line it came from."""

    def __init__(self, lines: list[tuple[str, int, str]], first_col: int = 1):
        self.text = "\n".join(text for _, _, text in lines)
        self.origins = [(file, number) for file, number, _ in lines]
        self.line_starts = []
        offset = 0
        for _, _, text in lines:
            self.line_starts.append(offset)
            offset += len(text) + 1
        self.first_col = first_col  # column of the first character (a command-line value)

    def position(self, index: int) -> tuple[str, int, int]:
        """(file, line, col) of the character at `index`."""
        row = max(bisect.bisect_right(self.line_starts, index) - 1, 0)
        file, line = self.origins[row]
        return file, line, index - self.line_starts[row] + self.first_col

    def span(self, start: int, end: int) -> Span:
        file, line, col = self.position(start)
        end_file, end_line, end_col = self.position(max(end - 1, start))
        if end_file != file:
            return Span(file, line, col, line, col + 1)
        return Span(file, line, col, end_line, end_col + 1)

    def origin_kind(self, index: int) -> str:
        """'file' for the config's own lines, 'include' for lines of a file it includes."""
        return "file" if self.position(index)[0] == self.origins[0][0] else "include"

    def source_map(self, start: int, end: int) -> tuple[list, list]:
        """Per character of text[start:end]: its (file, line, col) and the position just past it."""
        starts, ends = [], []
        for index in range(start, end):
            file, line, col = self.position(index)
            starts.append((file, line, col))
            ends.append((file, line, col + 1))
        return starts, ends

    def files(self) -> list[str]:
        return list(dict.fromkeys(file for file, _ in self.origins if not file.startswith("<")))


def strip_comment(line: str) -> str:
    """A line without its `#` comment: a line starting with `#` (after blanks) is all comment, a `#`
    after a blank or tab starts one; any other `#` is text (`1#INF`). Kept as long as the line was
    written, so columns stay those of the file."""
    stripped = line.lstrip(" \t")
    if stripped.startswith("#"):
        return ""
    at = line.find("#")
    while at > 0:
        if line[at - 1] in " \t":
            return line[:at]
        at = line.find("#", at + 1)
    return line


def _read_file(path: str, site: Span | None) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            text = normalize_newlines(handle.read())
    except FileNotFoundError:
        if site is not None:
            raise IncludeError(f"include file '{path}' not found", site) from None
        raise ConfigError(f"config file '{path}' not found",
                          hint=f"check the path (relative paths start at {os.getcwd()})") from None
    except IsADirectoryError:
        raise ConfigError(f"'{path}' is a directory, not a config file", site) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})", site) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc.strerror}", site) from None
    sources.register(path, text)
    return text


def _lines(text: str, name: str, seen: list[str]) -> list[tuple[str, int, str]]:
    """The lines of `text` (file `name`) without comments, `include=` lines replaced by their files."""
    out = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = strip_comment(line)
        if not line.startswith(_INCLUDE):
            out.append((name, number, line))
            continue
        site = Span(name, number, 1, number, len(line) + 1)
        for requested in line[len(_INCLUDE):].strip().split("+"):
            path = _find_include(requested.strip(), name, site)
            real = os.path.realpath(path)
            if real in seen:      # CNTK reads each file once
                continue
            seen.append(real)
            out.extend(_lines(_read_file(path, site), path, seen))
    return out


def _find_include(requested: str, including: str, site: Span) -> str:
    if "$" in requested:
        raise IncludeError(f"'$' in the include line '{_INCLUDE}{requested}': an include= line names files "
                           "explicitly", site, hint="CNTK substitutes no $variables$ in include= lines; "
                           "write the path, or include the file from BrainScript: include \"$ConfigDir$/x.bs\"")
    if not requested:
        raise IncludeError("include= names no file", site, hint="write include=other.cntk")
    candidates = [requested]
    if not os.path.isabs(requested) and not including.startswith("<"):
        candidates.insert(0, os.path.join(os.path.dirname(including) or ".", requested))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise IncludeError(f"include file '{requested}' not found (searched next to {including} and in the "
                       "current directory)", site)


# ---- items: key = value ---------------------------------------------------------------------------

class _Reader:
    """Reads the items of a legacy source into AST members, block by block: a block ends at its
    closing bracket, found as the items are read, so a network inside it is scanned by BrainScript's
    rules (its strings and comments may hold brackets)."""

    def __init__(self, source: LegacySource):
        self.source = source
        self.text = source.text
        self.bracketed: set[int] = set()   # ids of Records written with '[' (merged when given again)

    def error(self, message: str, start: int, end: int | None = None, hint: str | None = None) -> ParseError:
        return ParseError(message, self.source.span(start, end if end is not None else start + 1), hint=hint)

    def unclosed(self, opened_at: int) -> ParseError:
        opener = self.text[opened_at]
        return self.error(f"no closing {_BRAINSCRIPT_OPENERS[opener]} for this '{opener}'", opened_at,
                          hint="brackets and double quotes must be balanced in a .cntk file")

    # -- brackets
    def group_end(self, start: int, brainscript: bool = False) -> int:
        """The index just past the bracket group or quoted string opening at `start`. In a network
        (BrainScript) also `'` strings and `#`, `//`, `/* */` comments are skipped, so brackets in them
        do not count (CNTK counts them and fails; netlang is lenient there)."""
        text, end = self.text, len(self.text)
        stack = [(_OPENERS[text[start]], start)]
        i = start + 1
        while i < end:
            closer, opened_at = stack[-1]
            ch = text[i]
            if closer in "\"'":
                if ch == closer:
                    stack.pop()
            elif brainscript and (ch == "#" or text.startswith("//", i)):
                newline = text.find("\n", i)
                i = end if newline < 0 else newline
                continue
            elif brainscript and text.startswith("/*", i):
                close = text.find("*/", i + 2)
                i = end if close < 0 else close + 2
                continue
            elif ch == closer:
                stack.pop()
            elif ch in _OPENERS or (brainscript and ch == "'"):
                stack.append((_BRAINSCRIPT_OPENERS[ch], i))
            elif ch in _CLOSERS:
                raise self.unmatched(i, opened_at)
            if not stack:
                return i + 1
            i += 1
        raise self.unclosed(stack[-1][1])

    def unmatched(self, at: int, opened_at: int | None) -> ParseError:
        ch = self.text[at]
        if opened_at is None:
            return self.error(f"unmatched bracket: '{ch}' closes nothing", at)
        opener = self.text[opened_at]
        return self.error(f"unmatched bracket: '{ch}' does not close the '{opener}' at "
                          f"{self.source.span(opened_at, opened_at + 1)}", at,
                          hint=f"close the '{opener}' with '{_BRAINSCRIPT_OPENERS[opener]}' first")

    # -- blocks
    def block(self, start: int, separator: str = ";", opened_at: int | None = None) -> tuple[list[ast.Member], int]:
        """The members of the items from `start` to the bracket closing the one at `opened_at` (or
        to the end of the text), and the index after that bracket."""
        members: list[ast.Member] = []
        for member in self.items(start, separator, opened_at):
            if isinstance(member, int):
                return members, member
            self.add(members, member)
        return members, len(self.text)

    def add(self, members: list[ast.Member], member: ast.Member) -> None:
        """A later key replaces an earlier one of any case; a `[ … ]` block is merged into an earlier block."""
        lowered = member.name.lower()
        for i, old in enumerate(members):
            if old.name.lower() != lowered:
                continue
            if (isinstance(old.expr, ast.Record) and isinstance(member.expr, ast.Record)
                    and id(member.expr) in self.bracketed):
                merged = list(old.expr.members)
                for inner in member.expr.members:
                    self.add(merged, inner)
                record = ast.Record(member.expr.span, merged)
                self.bracketed.add(id(record))
                members[i] = replace(old, expr=record)
            else:
                members[i] = replace(member, name=old.name)
            return
        members.append(member)

    def items(self, start: int, separator: str, opened_at: int | None):
        """The members of the block's items; last, the index after its closing bracket."""
        text = self.text
        closer = _OPENERS[text[opened_at]] if opened_at is not None else None
        separators = "\n," + separator
        i = start
        while True:
            if i >= len(text):
                if opened_at is not None:
                    raise self.unclosed(opened_at)
                yield i
                return
            ch = text[i]
            if ch == closer:
                yield i + 1
                return
            if ch in separators or ch in " \t":
                i += 1
            elif ch in "[{":          # a block without a key: CNTK reads its items as this block's
                inner, i = self.block(i + 1, ";", i)
                yield from inner
            elif ch in _CLOSERS:
                raise self.unmatched(i, opened_at)
            else:
                member, i = self.item(i, separators, closer)
                if member is not None:
                    yield member

    def item(self, start: int, separators: str, closer: str | None) -> tuple[ast.Member | None, int]:
        """One `key = value` (or bare `key`) starting at `start`; returns it and where the next item may start."""
        text, end = self.text, len(self.text)
        stops = "=[{(\"" + separators + (closer or "")
        k = start
        while k < end and text[k] not in stops:
            k += 1
        key = text[start:k].strip(" \t")
        key_span = self.source.span(start, start + max(len(key), 1))
        origin = self.source.origin_kind(start)
        if k >= end or text[k] in separators or text[k] == closer:   # a bare key means key = true
            if not key:
                return None, k
            return self.member(key, key_span, ast.LegacyText(key_span, "true"), start, k, origin), k
        v = k + 1 if text[k] == "=" else k
        while v < end and text[v] in " \t":
            v += 1
        if not key:
            raise self.error("a value without a key", start, hint="write key = value")
        if v >= end or text[v] in separators or text[v] == closer:
            raise self.error(f"no value given for '{key}'", k, hint=f"write {key} = value (or {key} alone for true)")
        value, after = self.value(key, v, separators, closer)
        return self.member(key, key_span, value, start, after, origin), after

    def member(self, key: str, key_span: Span, value: ast.Node, start: int, end: int, origin: str) -> ast.Member:
        return ast.Member(self.source.span(start, max(end, start + 1)), key, value, key_span, origin=origin)

    # -- values
    def value(self, key: str, v: int, separators: str, closer: str | None) -> tuple[ast.Node, int]:
        """The value starting at `v` and the index after it."""
        text = self.text
        opener = text[v]
        if key.lower() in NETWORK_KEYS and opener in _OPENERS:
            close = self.group_end(v, brainscript=True)
            inner = (v + 1, close - 1) if opener == '"' else (v, close)
            return ast.LegacyBrainScript(self.source.span(v, close), self.source, *inner), close
        if opener == '"':
            close = self.group_end(v)
            span = self.source.span(v + 1, close - 1) if close - v > 2 else self.source.span(v, close)
            return ast.LegacyText(span, text[v + 1:close - 1]), close
        if opener in "[{":
            first, separator = self.separator(v + 1, ";")
            members, close = self.block(first, separator, v)
            record = ast.Record(self.source.span(v, close), members)
            if opener == "[":
                self.bracketed.add(id(record))
            return record, close
        if opener == "(":
            return self.array(v)
        return self.text_value(v, separators, closer)

    def text_value(self, v: int, separators: str, closer: str | None) -> tuple[ast.LegacyText, int]:
        """An unquoted value: to the next separator or closing bracket (its block's end, or an error
        the block reports), trimmed."""
        text, end = self.text, len(self.text)
        j = v
        while j < end and text[j] not in separators and text[j] not in _CLOSERS:
            j = self.group_end(j) if text[j] in _OPENERS else j + 1
        stop = j
        while stop > v and text[stop - 1] in " \t":
            stop -= 1
        return ast.LegacyText(self.source.span(v, max(stop, v + 1)), text[v:stop]), j

    def separator(self, start: int, default: str) -> tuple[int, str]:
        """CNTK's custom separator: a separator character right after the opening bracket."""
        text = self.text
        if start < len(text) and text[start] in _CUSTOM_SEPARATORS and not text.startswith(_PATH_STARTS, start):
            return start + 1, text[start]
        return start, default

    def array(self, v: int) -> tuple[ast.Node, int]:
        """`( a : b )`: an array when it holds blocks (`( [ … ] : [ … ] )`), else the text inside."""
        text = self.text
        first, separator = self.separator(v + 1, ":")
        separators = "\n," + separator
        elements = []
        i = first
        while True:
            if i >= len(text):
                raise self.unclosed(v)
            ch = text[i]
            if ch == ")":
                close = i + 1
                break
            if ch in separators or ch in " \t":
                i += 1
            elif ch in "[{\"(":
                element, i = self.value("", i, separators, ")")
                elements.append(element)
            elif ch in _CLOSERS:
                raise self.unmatched(i, v)
            else:
                element, i = self.text_value(i, separators, ")")
                elements.append(element)
        if any(isinstance(e, ast.Record) for e in elements):
            return ast.ArrayLit(self.source.span(v, close), elements), close
        inner_start, inner_end = first, close - 1
        while inner_start < inner_end and text[inner_start] in " \t\n":
            inner_start += 1
        while inner_end > inner_start and text[inner_end - 1] in " \t\n":
            inner_end -= 1
        span = self.source.span(inner_start, max(inner_end, inner_start + 1))
        return ast.LegacyText(span, text[inner_start:inner_end]), close


# ---- public entry points: reading -----------------------------------------------------------------

def read_legacy_text(text: str, name: str) -> ast.Record:
    """The record of a legacy config text (values still unsubstituted: see `resolve`)."""
    text = normalize_newlines(text)
    sources.register(name, text)
    seen = [os.path.realpath(name)] if not name.startswith("<") else []
    source = LegacySource(_lines(text, name, seen))
    members, _ = _Reader(source).block(0)
    lines = text.split("\n")
    return ast.Record(Span(name, 1, 1, len(lines), len(lines[-1]) + 1), members)


def read_legacy_file(path: str) -> ast.Record:
    """The record of the `.cntk` file at `path` (values still unsubstituted: see `resolve`)."""
    return read_legacy_text(_read_file(path, None), path)


def parse_override_value(key: str, text: str, name: str, line: int, col: int) -> ast.Node:
    """The value of a command-line `key=value` for a legacy config, read as one more config line
    (CNTK appends command-line settings to the config text); it starts at line:col of `name`."""
    source = LegacySource([(name, line, text)], first_col=col)
    reader = _Reader(source)
    start = len(text) - len(text.lstrip(" \t"))
    if start >= len(text):
        return ast.LegacyText(source.span(0, 1), "")
    if text[start] in _OPENERS:
        value, close = reader.value(key, start, "", None)
        if text[close:].strip():
            raise reader.error(f"unexpected text after the value of '{key}'", close)
        return value
    stop = len(text.rstrip(" \t"))
    return ast.LegacyText(source.span(start, stop), text[start:stop])


# ---- resolving: $name$ substitution and the network text ------------------------------------------

class _Variables:
    """CNTK's `$name$` substitution against the top-level keys of a (possibly overridden) config;
    `defaults` are texts for names the config does not define (netlang's `$ConfigDir$`)."""

    def __init__(self, top: ast.Record, defaults: dict[str, str]):
        self.members = {m.name.lower(): m for m in top.members}
        self.texts: dict[str, str] = {}
        self.active: list[str] = []
        self.defaults = {name.lower(): text for name, text in defaults.items()}

    def text(self, name: str, span: Span) -> str:
        """The substituted text of top-level key `name` (any case)."""
        lowered = name.lower()
        if lowered in self.texts:
            return self.texts[lowered]
        member = self.members.get(lowered)
        if member is None and lowered in self.defaults:
            return self.defaults[lowered]
        if member is None:
            raise EvalError(f"undefined variable '${name}$'", span,
                            hint=suggest(name, [m.name for m in self.members.values()]) or
                            f"`$name$` names a key of the top level (in any case): define {name} = … there")
        if lowered in self.active:
            chain = " -> ".join(f"${n}$" for n in self.active[self.active.index(lowered):] + [lowered])
            raise EvalError(f"variable '${name}$' refers to itself: {chain}", span,
                            hint="a $variable$ cannot be defined through itself")
        self.active.append(lowered)
        try:
            text = self._value_text(member, name, span)
        finally:
            self.active.pop()
        if "\n" in text:
            raise EvalError(f"the value of '${name}$' spans several lines, which cannot be substituted", span,
                            hint="CNTK substitutes only values written on one line")
        self.texts[lowered] = text
        return text

    def _value_text(self, member: ast.Member, name: str, span: Span) -> str:
        expr = member.expr
        if isinstance(expr, ast.LegacyText):
            return self.substitute(expr.text, expr.span, [])
        if isinstance(expr, ast.String):
            return expr.value
        what = "a block" if isinstance(expr, ast.Record) else "a network" if isinstance(
            expr, ast.LegacyBrainScript) else "an array of blocks"
        raise EvalError(f"'${name}$' names {what} ({member.name} at {member.name_span or member.span}), "
                        "whose text cannot be substituted", span, hint="$name$ stands for a one-line value")

    def substitute(self, text: str, span: Span, references: list) -> str:
        """`text` (written at `span`) with every `$name$` replaced; the names go to `references`."""
        return self._substitute(text, lambda start, stop: _offset_span(span, text, start, stop), references)

    def substitute_mapped(self, text: str, starts: list, ends: list, references: list):
        """`substitute`, keeping each character's source position (substituted text takes the
        position of its `$name$`)."""
        source_map = SourceMap(starts, ends)
        pieces = []
        out = self._substitute(text, source_map.span, references, pieces)
        new_starts, new_ends = [], []
        for kind, a, b, length in pieces:
            if kind == "text":
                new_starts.extend(starts[a:b])
                new_ends.extend(ends[a:b])
            else:
                whole = source_map.span(a, b)
                begin = (whole.file, whole.line, whole.col)
                finish = (whole.file, whole.end_line, whole.end_col)
                new_starts.extend([begin] * length)
                new_ends.extend([finish] * length)
        return out, new_starts, new_ends

    def _substitute(self, text: str, span_of, references: list, pieces: list | None = None) -> str:
        """CNTK's rule: a `$` followed by a letter or '_' starts a name that runs to the next `$`;
        a name that meets a blank or punctuation first leaves the `$` as it is."""
        out = []
        copied = 0
        start = text.find("$")
        while start >= 0:
            after = text[start + 1:start + 2]
            if after and not (after.isascii() and (after.isalpha() or after == "_")):
                start = text.find("$", start + 2)
                continue
            stop = start + 1
            while stop < len(text) and text[stop] != "$" and text[stop] not in _NAME_STOPS:
                stop += 1
            if stop >= len(text) or text[stop] != "$":
                start = text.find("$", start + 1)
                continue
            name = text[start + 1:stop]
            span = span_of(start, stop + 1)
            value = self.text(name, span)
            references.append(ast.Ident(span, name))
            out.append(text[copied:start])
            out.append(value)
            if pieces is not None:
                pieces.append(("text", copied, start, start - copied))
                pieces.append(("value", start, stop + 1, len(value)))
            copied = stop + 1
            start = text.find("$", copied)
        out.append(text[copied:])
        if pieces is not None:
            pieces.append(("text", copied, len(text), len(text) - copied))
        return "".join(out)


def _offset_span(span: Span, text: str, start: int, stop: int) -> Span:
    """The span of text[start:stop], `text` being written from `span`'s start."""
    def position(offset: int) -> tuple[int, int]:
        newlines = text.count("\n", 0, offset)
        if newlines == 0:
            return span.line, span.col + offset
        return span.line + newlines, offset - text.rindex("\n", 0, offset)

    line, col = position(start)
    end_line, end_col = position(stop)
    return Span(span.file, line, col, end_line, end_col)


def resolve(record: ast.Record, include_path: Sequence[str] = (), defaults: dict | None = None) -> ast.Record:
    """`record` (read by `read_legacy_file`, perhaps overridden) with every `$name$` substituted and
    the network texts parsed as BrainScript. Values that fail become `ast.Failure`s. `defaults` gives
    the text of names the config does not define."""
    variables = _Variables(record, defaults or {})
    return replace(record, members=[_resolve_member(m, variables, include_path) for m in record.members])


def _resolve_member(member: ast.Member, variables: _Variables, include_path) -> ast.Member:
    references: list = []
    expr = _resolve_value(member.expr, variables, include_path, references)
    return replace(member, expr=expr, references=member.references + references)


def _resolve_value(node: ast.Node, variables: _Variables, include_path, references: list) -> ast.Node:
    try:
        if isinstance(node, ast.LegacyText):
            return ast.String(node.span, variables.substitute(node.text, node.span, references))
        if isinstance(node, ast.LegacyBrainScript):
            return _network(node, variables, include_path, references)
    except ConfigError as err:
        return ast.Failure(err.span or node.span, err)
    if isinstance(node, ast.Record):
        return replace(node, members=[_resolve_member(m, variables, include_path) for m in node.members])
    if isinstance(node, ast.ArrayLit):
        return replace(node, items=[_resolve_value(i, variables, include_path, references) for i in node.items])
    return node


def _network(node: ast.LegacyBrainScript, variables: _Variables, include_path, references: list) -> ast.Node:
    """The network text, substituted and parsed as one BrainScript expression (a record `{ … }` or
    `[ … ]`, or `( … )` giving a network, reference §3.9)."""
    source: LegacySource = node.source
    starts, ends = source.source_map(node.start, node.end)
    text, starts, ends = variables.substitute_mapped(source.text[node.start:node.end], starts, ends, references)
    if not text.strip():
        raise ParseError("the network is empty", node.span, hint="write BrainScriptNetworkBuilder = { … }")
    # CNTK searches the directories of the config files for BrainScript includes.
    search = [os.path.dirname(f) or "." for f in source.files()] + list(include_path)
    return parse_embedded(text, SourceMap(starts, ends), search)
