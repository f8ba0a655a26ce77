"""Ops of the user's own, in Python: the modules a config names in `opModules`.

A module registers its ops with the registry's own `register(OpDef(...))`, exactly as netlang's op
families do (netlang/ops/); the config then builds nodes of them with
`new ComputationNode [ operation = "MyOp" ; inputs = (x) ]`. Importing a module is what registers
its ops, so each is imported once per process, however often configs name it.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import zlib

from netlang.errors import ConfigError


def import_op_modules(names, span=None) -> None:
    """Import each module of `opModules`: a path to a `.py` file (relative to the working directory)
    or a dotted module name on the Python path."""
    for name in names or ():
        if name.endswith(".py") or os.sep in name or "/" in name:
            _import_file(name, span)
        else:
            _import_module(name, span)


def _import_file(path: str, span) -> None:
    full = os.path.abspath(path)
    module_name = "netlang_user_ops." + os.path.splitext(os.path.basename(full))[0] + f"_{_digest(full)}"
    if module_name in sys.modules:
        return
    if not os.path.isfile(full):
        raise ConfigError(f"opModules: no file '{path}'", span, key="opModules",
                          hint="a relative path is resolved against the working directory; "
                               "write \"$ConfigDir$/myops.py\" for a file next to the config")
    spec = importlib.util.spec_from_file_location(module_name, full)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigError(f"opModules: '{path}' failed to import: {type(exc).__name__}: {exc}", span,
                          key="opModules", hint="run with --debug for the Python traceback") from exc


def _import_module(name: str, span) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ConfigError(f"opModules: cannot import '{name}': {err}", span, key="opModules",
                          hint="name a module on the Python path or a .py file") from None


def _digest(path: str) -> str:
    return format(zlib.crc32(path.encode("utf-8")), "08x")
