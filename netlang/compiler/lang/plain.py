"""Plain forms of config values: JSON/YAML-friendly data, short human text, phrases for errors,
and numbers written as text the way CNTK's config layer reads them.

`netlang check`, `netlang explain` and the trainer's `config.resolved.yaml` print values through
here, so one value looks the same everywhere: infinity is "infinity", 2.0 is 2, a schedule is its
CNTK text "0.01*2:0.005".
"""
from __future__ import annotations

import math

from netlang import sources
from netlang.compiler.lang import values
from netlang.errors import Span


def format_number(value) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "infinity" if value > 0 else "-infinity"
    if isinstance(value, float) and abs(value) < 1e15 and value == int(value):   # NaN fails the first test
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


_INFINITY_WORDS = {"#inf", "1#inf", "inf", "infinity", "+inf", "+infinity"}


def parse_float_text(text: str) -> float | None:
    """A number written as CNTK's config layer reads it (strtod plus `1#INF`/`#INF`), or None."""
    word = text.strip().lower()
    if word in _INFINITY_WORDS:
        return math.inf
    if word.startswith("-") and word[1:] in _INFINITY_WORDS:
        return -math.inf
    try:
        return float(word)
    except ValueError:
        return None


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def describe_value(value) -> str:
    """A short phrase for an unexpected value in an error message ("the string "three"")."""
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if is_number(value):
        return f"the number {format_number(value)}"
    if isinstance(value, str):
        return f'the string "{value}"'
    return kind_of(value)


def kind_of(value) -> str:
    name = values.type_name(value)
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def to_plain(value):
    """A config value in JSON/YAML-friendly form. Typed values that have a plain form of their own
    (a schedule, a validated block) give it through `to_plain()`."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if is_number(value):
        if isinstance(value, float):
            if math.isinf(value):
                return "infinity" if value > 0 else "-infinity"
            if abs(value) < 1e15 and value == int(value):                 # NaN fails the first test
                return int(value)
        return value
    own = getattr(value, "to_plain", None)
    if callable(own):
        return own()
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, values.Array):
        return [to_plain(v) for v in value.items()]
    return f"<{kind_of(value).split(' ', 1)[-1]}>"  # records, functions, nodes: not evaluated further


def format_plain(value) -> str:
    """Short human text of a plain value."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return ":".join(format_plain(v) for v in value) if value else "(empty)"
    if isinstance(value, dict):
        return "{ ... }"
    return str(value)


def span_text(span: Span) -> str | None:
    """The source text a span covers (multi-line spans included), when the file is known."""
    if span is None or not span.end_line:
        return None
    lines = []
    for number in range(span.line, span.end_line + 1):
        line = sources.line_of(span.file, number)
        if line is None:
            return None
        start = span.col - 1 if number == span.line else 0
        end = span.end_col - 1 if number == span.end_line else len(line)
        lines.append(line[start:end])
    return "\n".join(lines)
