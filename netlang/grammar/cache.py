"""On-disk caches of the front end: the LALR parse table and the parsed standard library.

Both live in `$NETLANG_CACHE` or `~/.cache/netlang/`. A cache is only an optimisation: when the
directory cannot be created or written, or an entry cannot be read back, we silently do the work
again. Entries are keyed by a hash of everything they depend on, so a stale entry is never used.

A cache file is data that anyone able to write it controls, so reading one must never run code:
entries are JSON (no pickle, no marshal), and decoding builds only the AST node classes of
`netlang.grammar.ast` and plain values. The first line of an entry is its key, compared before the
rest is decoded. The directory is created private (0700), and a directory or file that is not the
user's own or that others may write is not used at all.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

import netlang
from netlang.errors import Span
from netlang.grammar import ast

FORMAT = "netlang-cache-1"


def cache_dir() -> Path | None:
    """The cache directory, created private if needed; None when it cannot be created or is not safe."""
    root = os.environ.get("NETLANG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "netlang")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError:
        return None
    if not _private(root) or not os.access(root, os.W_OK | os.R_OK | os.X_OK):
        return None
    return Path(root)


def _private(path) -> bool:
    """Owned by this user and writable by nobody else (group or others)."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    owner_ok = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return owner_ok and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def front_end_fingerprint() -> str:
    """A hash of the code that determines the AST, so a changed parser invalidates cached ASTs."""
    digest = hashlib.sha256(netlang.__version__.encode())
    here = Path(__file__).parent
    for name in ("netlang.lark", "ast.py", "ast_builder.py", "lexer.py", "parser.py", "cache.py"):
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            pass
    return digest.hexdigest()


# ---- entries: a key line, then one JSON document ---------------------------------------------------

def _entry_path(kind: str, key: str) -> Path | None:
    root = cache_dir()
    return root / f"{kind}-{key[:24]}.json" if root else None


def read_entry(kind: str, key: str):
    """The JSON document stored under (`kind`, `key`), or None when there is none or it is unusable."""
    path = _entry_path(kind, key)
    if path is None or not path.is_file() or not _private(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.readline().rstrip("\n") != f"{FORMAT} {key}":
                return None
            return json.load(handle)
    except (OSError, ValueError, RecursionError):   # truncated, foreign or too deep: do the work again
        return None


def write_entry(kind: str, key: str, document) -> None:
    """Store `document` under (`kind`, `key`), replacing the entries of other keys (best effort)."""
    path = _entry_path(kind, key)
    if path is None:
        return
    # Write to a temporary file (created 0600) and rename, so a concurrent reader never sees half a file.
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{kind}-", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"{FORMAT} {key}\n")
            json.dump(document, handle, separators=(",", ":"))
        os.replace(tmp, path)
    except (OSError, ValueError, TypeError, RecursionError):  # disk full, or a value JSON cannot hold
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    # Entries for older library texts or parser versions will never be read again.
    for stale in path.parent.glob(f"{kind}-*"):
        if stale != path:
            with contextlib.suppress(OSError):
                stale.unlink()


# ---- the parsed standard library -----------------------------------------------------------------

# The only classes a cached AST may name: the node classes of netlang.grammar.ast.
_NODE_CLASSES = {cls.__name__: cls for cls in vars(ast).values()
                 if isinstance(cls, type) and issubclass(cls, ast.Node)}


class _AstCodec:
    """An AST as nested JSON lists. A node is `[class name, field …]` in dataclass field order, a span
    `[file number, line, col, end line, end col]` (numbers only), a list of nodes a list of those;
    file names are kept once, in `files`."""

    def __init__(self, files: list[str] | None = None):
        self.files = list(files or [])
        self._file_numbers = {name: i for i, name in enumerate(self.files)}

    def encode(self, value):
        if isinstance(value, ast.Node):
            return [type(value).__name__] + [self.encode(getattr(value, f.name))
                                             for f in dataclasses.fields(value)]
        if isinstance(value, Span):
            number = self._file_numbers.setdefault(value.file, len(self.files))
            if number == len(self.files):
                self.files.append(value.file)
            return [number, value.line, value.col, value.end_line, value.end_col]
        if isinstance(value, list):
            return [self.encode(item) for item in value]
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        raise TypeError(f"cannot cache a {type(value).__name__} in an AST")

    def decode(self, value):
        if not isinstance(value, list):
            return value
        if value and isinstance(value[0], str):
            cls = _NODE_CLASSES[value[0]]        # KeyError: not a node class of ours
            return cls(*(self.decode(item) for item in value[1:]))
        if value and type(value[0]) is int:
            number, line, col, end_line, end_col = value
            return Span(self.files[number], line, col, end_line, end_col)
        return [self.decode(item) for item in value]


def read_ast(key: str) -> ast.Record | None:
    """The AST stored under `key`, or None when there is none (or it cannot be read)."""
    document = read_entry("stdlib", key)
    if not isinstance(document, dict):
        return None
    try:
        files = document["files"]
        if not all(isinstance(name, str) for name in files):
            return None
        record = _AstCodec(files).decode(document["ast"])
    except (KeyError, TypeError, ValueError, IndexError, RecursionError):
        return None
    return record if isinstance(record, ast.Record) else None


def write_ast(key: str, record: ast.Record) -> None:
    """Store `record` under `key` (best effort)."""
    codec = _AstCodec()
    try:
        tree = codec.encode(record)
    except (TypeError, RecursionError):
        return
    write_entry("stdlib", key, {"files": codec.files, "ast": tree})


# ---- the LALR parse table --------------------------------------------------------------------------

def plain_to_json(value, code: dict | None = None):
    """Lark's serialised parser (dicts with int keys, tuples, lists, scalars) as JSON-safe values.
    `code` names the few objects that are code (Lark keeps our lexer class in its table): they are
    stored by name only, and `plain_from_json` puts back the objects its caller gives for the names."""
    code = code or {}
    for name, obj in code.items():
        if value is obj:
            return {"__code__": name}
    if isinstance(value, tuple):
        return {"__tuple__": [plain_to_json(v, code) for v in value]}
    if isinstance(value, list):
        return [plain_to_json(v, code) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: plain_to_json(v, code) for k, v in value.items()}
        return {"__items__": [[plain_to_json(k, code), plain_to_json(v, code)] for k, v in value.items()]}
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"cannot cache a {type(value).__name__}")


def plain_from_json(value, code: dict | None = None):
    """The inverse of `plain_to_json`; an unknown code name is a KeyError."""
    code = code or {}
    if isinstance(value, list):
        return [plain_from_json(v, code) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__code__"}:
            return code[value["__code__"]]
        if set(value) == {"__tuple__"}:
            return tuple(plain_from_json(v, code) for v in value["__tuple__"])
        if set(value) == {"__items__"}:
            return {_hashable(plain_from_json(k, code)): plain_from_json(v, code) for k, v in value["__items__"]}
        return {k: plain_from_json(v, code) for k, v in value.items()}
    return value


def _hashable(key):
    if isinstance(key, (list, dict)):
        raise TypeError("a dictionary key must be a scalar or a tuple")
    return key
