"""On-disk caches of the front end: the LALR parse table and the parsed standard library.

Both live in `$NETLANG_CACHE` or `~/.cache/netlang/`. A cache is only an optimisation: when the
directory cannot be created or written, or an entry cannot be read back, we silently do the work
again. Entries are keyed by a hash of everything they depend on, so a stale entry is never used.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
from pathlib import Path

import netlang
from netlang.grammar import ast


def cache_dir() -> Path | None:
    """The cache directory, created if needed; None when it cannot be created."""
    root = os.environ.get("NETLANG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "netlang")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError:
        return None
    return Path(root) if os.access(root, os.W_OK | os.R_OK) else None


def lark_cache_file() -> str | bool:
    """The file for Lark's `cache=` option (Lark checks its own grammar hash), or False for none."""
    root = cache_dir()
    return str(root / "lark-lalr.cache") if root else False


def front_end_fingerprint() -> str:
    """A hash of the code that determines the AST, so a changed parser invalidates cached ASTs."""
    digest = hashlib.sha256(netlang.__version__.encode())
    here = Path(__file__).parent
    for name in ("netlang.lark", "ast.py", "ast_builder.py", "lexer.py", "parser.py"):
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            pass
    return digest.hexdigest()


def _pickle_path(key: str) -> Path | None:
    root = cache_dir()
    return root / f"stdlib-{key[:24]}.pickle" if root else None


def read_ast(key: str) -> ast.Record | None:
    """The AST stored under `key`, or None when there is none (or it cannot be read)."""
    path = _pickle_path(key)
    if path is None or not path.exists():
        return None
    try:
        with open(path, "rb") as handle:
            stored_key, record = pickle.load(handle)
    except Exception:  # a truncated or foreign file: parse again
        return None
    return record if stored_key == key and isinstance(record, ast.Record) else None


def write_ast(key: str, record: ast.Record) -> None:
    """Store `record` under `key`, replacing the entries of other keys (best effort)."""
    path = _pickle_path(key)
    if path is None:
        return
    # Write to a temporary file and rename, so a concurrent reader never sees half a file.
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".stdlib-", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            pickle.dump((key, record), handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except Exception:  # disk full, or an AST too deep to pickle: the cache is only an optimisation
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    # Entries for older library texts or parser versions will never be read again.
    for stale in path.parent.glob("stdlib-*.pickle"):
        if stale != path:
            with contextlib.suppress(OSError):
                stale.unlink()
