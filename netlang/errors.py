"""The one error hierarchy of netlang.

Every error a user can see is a NetlangError. Config errors carry a source Span (file, line, col);
data errors carry a DataPosition (file, line or record, stream). An error is written in one way,
`location: kind: key: message (hint: …)`: `format_error` as one line of text (also `str(err)`, without
the kind), `render_error` for the terminal, with the source line and a caret under it. The CLI exits
with the error's `exit_code`; no Python traceback reaches a user unless `--debug` is given.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from netlang import sources

# Exit codes (BSD sysexits where one fits).
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DATA = 65
EXIT_INTERNAL = 70
EXIT_CANT_CREATE = 73
EXIT_BUSY = 75
EXIT_CONFIG = 78
EXIT_INTERRUPTED = 130

# How relative paths in a config resolve (README "Paths"), for the hints of errors about files.
RELATIVE_PATH_HINT = ("a relative path is resolved against the working directory, as in CNTK; "
                      "write \"$ConfigDir$/...\" for a file next to the config")


@dataclass(frozen=True)
class Span:
    """A region of source text. Lines and columns are 1-based; `end_*` point just past the region."""

    file: str
    line: int
    col: int
    end_line: int = 0
    end_col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class DataPosition:
    """Where in a data file something went wrong: file plus line (text formats) or record (binary/maps)."""

    file: str
    line: int | None = None
    col: int | None = None
    record: int | None = None
    stream: str | None = None

    def __str__(self) -> str:
        text = self.file
        if self.line is not None:
            text += f":{self.line}"
            if self.col is not None:
                text += f":{self.col}"
        elif self.record is not None:
            text += f" (record {self.record})"
        return text


@dataclass(frozen=True)
class CallFrame:
    """One entry of an evaluation call chain: what was being evaluated and where."""

    what: str
    span: Span


class NetlangError(Exception):
    """Base of every user-facing error."""

    exit_code = EXIT_CONFIG
    kind = "error"

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None,
                 key: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.key = key
        self.call_chain: list[CallFrame] = []

    def add_frame(self, what: str, span: Span | None) -> "NetlangError":
        """Record an outer evaluation context (innermost frames are added first)."""
        if span is not None and not any(f.span == span for f in self.call_chain):
            self.call_chain.append(CallFrame(what, span))
        return self

    def location(self) -> str:
        return str(self.span) if self.span else ""

    def subject(self) -> str:
        """What the message is about, as its prefix: the config key, if one is known."""
        return f"{self.key}: " if self.key else ""

    def __str__(self) -> str:
        return format_error(self)


class UsageError(NetlangError):
    """Wrong command-line usage."""

    exit_code = EXIT_USAGE
    kind = "usage error"


class ConfigError(NetlangError):
    """Anything wrong with a configuration: syntax, evaluation, schema, network."""

    exit_code = EXIT_CONFIG
    kind = "config error"


class ParseError(ConfigError):
    kind = "syntax error"


class IncludeError(ConfigError):
    kind = "include error"


class ConfigWarning(ConfigError):
    """Something a config should not say but that does not stop the run (a key a `.cntk` file may
    carry because CNTK ignores it). Reported, never raised."""

    kind = "warning"


class EvalError(ConfigError):
    kind = "evaluation error"


class SchemaError(ConfigError):
    kind = "config error"


class NetworkError(ConfigError):
    """Graph construction and validation problems: shapes, unknown ops, missing special nodes."""

    kind = "network error"


class DataError(NetlangError):
    """Bad or missing input data."""

    exit_code = EXIT_DATA
    kind = "data error"

    def __init__(self, message: str, position: DataPosition | None = None, hint: str | None = None):
        super().__init__(message, None, hint, key=position.stream if position else None)
        self.position = position

    def location(self) -> str:
        return str(self.position) if self.position else ""

    def subject(self) -> str:
        return f"stream '{self.position.stream}': " if self.position and self.position.stream else ""


class OutputError(NetlangError):
    """An output file or directory cannot be created or written (sysexits' "can't create")."""

    exit_code = EXIT_CANT_CREATE
    kind = "output error"


class BusyError(NetlangError):
    """Another run holds what this one needs (the output directory of a training); try again later."""

    exit_code = EXIT_BUSY
    kind = "busy"


class TrainingInterrupted(NetlangError):
    """Raised after a checkpoint was written because of SIGINT/SIGTERM."""

    exit_code = EXIT_INTERRUPTED
    kind = "interrupted"


def suggest(name: str, candidates, case_insensitive: bool = True) -> str | None:
    """A 'did you mean' hint for `name` among `candidates`, or None."""
    import difflib

    cands = list(candidates)
    if not cands:
        return None
    if case_insensitive:
        lowered = {c.lower(): c for c in cands}
        matches = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
        matches = [lowered[m] for m in matches]
    else:
        matches = difflib.get_close_matches(name, cands, n=3, cutoff=0.6)
    if not matches:
        return None
    return "did you mean " + " or ".join(f"'{m}'" for m in matches) + "?"


def _headline(err: NetlangError, with_kind: bool) -> list[tuple[str, str]]:
    """The parts of an error's first line, each with its rich style: location, kind, subject + message."""
    parts = [(err.location(), "bold")] if err.location() else []
    if with_kind:
        parts.append((err.kind, "bold red"))
    return parts + [(err.subject() + err.message, "")]


def format_error(err: NetlangError, with_kind: bool = False) -> str:
    """One line of plain text: `location: [kind: ]key: message (hint: …)`; `str(err)` without the kind."""
    text = ": ".join(part for part, _ in _headline(err, with_kind))
    return f"{text} (hint: {err.hint})" if err.hint else text


def render_error(err: NetlangError, console=None) -> None:
    """Print `err` for a human: the line of `format_error` with its kind (styled), then the source line
    with a caret, the hint, and the call chain."""
    from rich.console import Console
    from rich.markup import escape

    if console is None:
        console = Console(stderr=True, highlight=False, no_color="NO_COLOR" in os.environ)
    *labels, (message, _) = _headline(err, with_kind=True)
    head = "".join(f"[{style}]{escape(part)}:[/{style}] " for part, style in labels)
    console.print(head + escape(message))
    if err.span is not None:
        _print_source(console, err.span, "^")
    if err.hint:
        console.print(f"  [cyan]hint:[/cyan] {escape(err.hint)}")
    for frame in err.call_chain:
        console.print(f"  [dim]while evaluating[/dim] {escape(frame.what)} [dim]at[/dim] {escape(str(frame.span))}")
        _print_source(console, frame.span, "-")


def _print_source(console, span: Span, marker: str) -> None:
    from rich.markup import escape

    text = sources.line_of(span.file, span.line)
    if text is None:
        return
    text = text.rstrip("\n").expandtabs(1)
    width = 1
    if span.end_line == span.line and span.end_col > span.col:
        width = span.end_col - span.col
    console.print(f"  {span.line:>4} | {escape(text)}")
    console.print(f"       | {' ' * (span.col - 1)}[bold red]{marker * max(1, width)}[/bold red]")
