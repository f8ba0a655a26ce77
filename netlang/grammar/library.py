"""The standard library (netlang/stdlib/*.net), parsed once: in memory and in the on-disk cache."""
from __future__ import annotations

import hashlib
from pathlib import Path

from netlang import sources
from netlang.grammar import ast, cache, parser

STDLIB_PATH = Path(__file__).resolve().parent.parent / "stdlib" / "core.net"

# The in-memory copy of the standard library: (hash of its text, AST).
_stdlib_memo: tuple[str, ast.Record] | None = None


def load_stdlib() -> ast.Record:
    """netlang/stdlib/core.net parsed with origin="stdlib", or an empty Record when the file does not
    exist. Cached in memory and on disk; the Record is shared, so callers must not modify it."""
    global _stdlib_memo
    path = str(STDLIB_PATH)
    try:
        text = STDLIB_PATH.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ast.Record(ast.Span(path, 1, 1, 1, 1), [])
    # core.net includes the other library files (vision.net, sequences.net …): all of them key the cache.
    companions = "".join(p.read_text(encoding="utf-8") for p in sorted(STDLIB_PATH.parent.glob("*.net"))
                         if p != STDLIB_PATH)
    # The path is part of the key: spans in the cached AST name the library file they came from.
    key = hashlib.sha256((cache.front_end_fingerprint() + "\0" + path + "\0" + text + "\0" + companions)
                         .encode()).hexdigest()
    if _stdlib_memo is not None and _stdlib_memo[0] == key:
        return _stdlib_memo[1]
    sources.register(path, text)
    record = cache.read_ast(key)
    if record is None:
        record = parser.parse_text(text, path, origin="stdlib")
        cache.write_ast(key, record)
    _stdlib_memo = (key, record)
    return record
