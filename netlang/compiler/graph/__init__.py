"""The graph compiler: network values → validated IR networks → executable plans.

Configs that describe networks are evaluated through the entry points here: they hand the
language's evaluator `GRAPH_NODES`, so operators on nodes and `new ComputationNode […]` make IR nodes
(compiler/lang knows nothing of them).
"""
from __future__ import annotations

from typing import Sequence

from netlang.compiler.graph.nodes import GRAPH_NODES
from netlang.compiler.graph.user_ops import import_op_modules
from netlang.compiler.lang import config as _config
from netlang.compiler.lang import evaluator as _evaluator


def evaluate_file(path: str, overrides: Sequence[str] = (), include_path: Sequence[str] = ()):
    """The (lazy) top record of a config file whose network expressions make IR nodes."""
    return _evaluator.evaluate_file(path, overrides, include_path, nodes=GRAPH_NODES)


def evaluate_text(text: str, name: str = "<string>", overrides: Sequence[str] = (), include_path: Sequence[str] = ()):
    """Like `evaluate_file`, for config text."""
    return _evaluator.evaluate_text(text, name, overrides, include_path, nodes=GRAPH_NODES)


def evaluate_expression(text: str, scope=None):
    """One expression, evaluated with network nodes (tests, the REPL)."""
    return _evaluator.evaluate_expression(text, scope, nodes=GRAPH_NODES)


def load_config(path: str, overrides: Sequence[str] = (), include_path: Sequence[str] = ()) -> "_config.Config":
    """A validated config (compiler/lang/config.py) whose networks can be built; the modules of its
    `opModules` are imported first, so their ops exist when a network is built."""
    config = _config.Config(evaluate_file(path, overrides, include_path), path, overrides)
    import_op_modules(config.top.opModules, config.top.span_of("opModules"))
    return config
