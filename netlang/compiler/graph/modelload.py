"""`BS.Network.Load(pathName)`: a trained model file as a network value (reference §4.6).

`new ComputationNetworkFromFile [ pathName = … ]` reads a netlang model file and gives its Network,
whose parameters start from the stored values; so `network = (BS.Network.Load("model.dnn"))`
evaluates, tests or fine-tunes a trained model. (Cloning and editing subgraphs come with the model
editing work.)
"""
from __future__ import annotations

import numpy as np

from netlang.compiler.lang import nodes as hooks
from netlang.compiler.lang.nodes import BuildContext
from netlang.errors import DataError, EvalError


def load_network(record, ctx: BuildContext):
    from netlang.ir.modelfile import load_model

    path = record.find("pathName")
    if not isinstance(path, str):
        raise EvalError("BS.Network.Load needs a file name (pathName)", ctx.span)
    try:
        model = load_model(path)
    except DataError as err:
        err.add_frame("BS.Network.Load", ctx.span)
        raise
    for node in model.network.parameters:
        if node.name in model.parameters:
            node.value = np.asarray(model.parameters[node.name], dtype=np.float64)
    model.network.span = ctx.span
    return model.network


hooks.register_constructor("ComputationNetworkFromFile", load_network)
