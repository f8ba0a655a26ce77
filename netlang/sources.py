"""Source texts seen by the parser, kept so that errors can show the offending line.

Every text the parser reads (files, includes, command-line overrides, the standard library) is
registered here under the name that its Spans carry.
"""
from __future__ import annotations

_texts: dict[str, list[str]] = {}


def register(name: str, text: str) -> None:
    _texts[name] = text.splitlines()


def line_of(name: str, line: int) -> str | None:
    lines = _texts.get(name)
    if lines is None:
        try:
            with open(name, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return None
        _texts[name] = lines
    if 1 <= line <= len(lines):
        return lines[line - 1]
    return None
