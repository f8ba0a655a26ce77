"""The `edit` action: build a network from a config, usually from a trained model, and save it.

    edit = { action = "edit" ; outputModelPath = "out/detector.dnn"
             BrainScriptNetworkBuilder = { m = BS.Network.Load ("out/model.dnn") ; … } }

The block's network (CNTK's modern form: `BrainScriptNetworkBuilder` with BS.Network.Load,
CloneFunction and Edit) is built and written to `outputModelPath` as a model file: parameters that
came from a model keep their values, new ones are initialised as training would initialise them.
With `makeMode` (the default) an existing `outputModelPath` is left alone, as CNTK does. CNTK's
older MEL form (`editPath`) is not supported.
"""
from __future__ import annotations

import os

from netlang.compiler.graph.network import build_action_network
from netlang.ir.modelfile import save_model
from netlang.runtime.executor import initial_parameters


def run_edit(config, name: str, view) -> dict:
    """Build the block's network and write it to outputModelPath: {"model": path, "parameters": N}."""
    if view.editPath:
        raise view.error("editPath", "MEL edit scripts (editPath) are not supported",
                         hint="describe the edited network in BrainScript: BrainScriptNetworkBuilder = "
                              "{ m = BS.Network.Load (…) ; … } with BS.Network.Edit or CloneFunction")
    ref = view.network_expr()
    if ref is None:
        raise view.block_error("the edit action needs a network",
                               hint="BrainScriptNetworkBuilder = { m = BS.Network.Load (\"model.dnn\") ; … }")
    if not view.outputModelPath:
        raise view.block_error("the edit action needs outputModelPath", hint="outputModelPath = \"out/edited.dnn\"")
    path = view.outputModelPath
    if view.makeMode and os.path.exists(path):
        return {"model": path, "parameters": None, "skipped": True}
    network = build_action_network(ref)
    save_model(path, network, initial_parameters(network), meta={"writtenBy": f"edit action '{name}'"})
    return {"model": path, "parameters": network.parameter_count(), "skipped": False}


def print_edited(console, name: str, result: dict) -> None:
    if result["skipped"]:
        console.print(f"{name}: {result['model']} exists; nothing to do (makeMode = true)", markup=False)
    else:
        console.print(f"{name}: wrote {result['model']} ({result['parameters']:,} learnable parameters)",
                      markup=False)
