"""`netlang export MODEL.dnn -o model.onnx` (or `netlang export cfg.net [--action A]`): ONNX export.

The model is a model file written by training, or the file a config's action names in `modelPath`
(the first action that has one, or `--action`). `--outputs` names the nodes to export (default: the
network's output nodes). What the exported model computes, and in which layout, is described in
netlang/export/onnx.py.
"""
from __future__ import annotations

import os

from netlang.compiler.graph import load_config
from netlang.compiler.graph.modelcheck import checked_model
from netlang.compiler.graph.network import build_action_network
from netlang.errors import UsageError, suggest
from netlang.export.onnx import export_onnx
from netlang.ir import modelfile
from netlang.ops import registry

ZIP_MAGIC = b"PK\x03\x04"


def run(args) -> int:
    path, view = model_and_action(args)
    model = modelfile.load_model(path)
    unknown = sorted({n.op for n in model.network.nodes if registry.get(n.op) is None})
    if unknown:
        raise UsageError(f"{path}: the model uses op {', '.join(unknown)}, which no imported module registers",
                         hint="export through the config that names its opModules: netlang export cfg.net")
    model = checked_model(model, path)
    # The config's own network (the same nodes, by name) knows where each node was written.
    network = model.network if view is None or view.network_expr() is None else build_action_network(view.network_expr())
    target = args.output or os.path.splitext(path)[0] + ".onnx"
    outputs = [name for names in (args.outputs or []) for name in names.split(":") if name]
    export_onnx(network, model.parameters, target, outputs=outputs, state=model.state)
    print(target)
    return 0


def model_and_action(args) -> tuple:
    """(model file, action view or None): the file named on the command line, or the modelPath of
    a config's action."""
    if _is_model_file(args.config):
        if args.overrides:
            raise UsageError("overrides need a config, not a model file", hint=f"netlang export {args.config} -o x.onnx")
        return args.config, None
    config = load_config(args.config, args.overrides)
    actions = [(name, view) for name, view in config.actions() if view.modelPath]
    if args.action is not None:
        chosen = [(n, v) for n, v in actions if n.lower() == args.action.lower()]
        if not chosen:
            raise UsageError(f"no action '{args.action}' with a modelPath",
                             hint=suggest(args.action, [n for n, _ in actions]) or "name an action of command = …")
        actions = chosen
    if not actions:
        raise UsageError("no action of this config has a modelPath", hint="set modelPath, or export a model file")
    return actions[0][1].modelPath, actions[0][1]


def _is_model_file(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == ZIP_MAGIC
    except OSError:
        return False
