"""Model reuse (reference §4.6 `BS.Network`): a loaded network as a record, CloneFunction, Edit.

* **A network is a record of its nodes.** `m = BS.Network.Load ("model.dnn")` and then `m.z`,
  `m.features`: a member is the node of that name. Names that hold `.`, `[` or `]` (a layer's
  `conv1.W`, an array element `layers[0]`) are reached with those characters written `_`
  (`m.conv1_W`), as CNTK does; the exact name works too where it is a valid identifier.
  `netlang inspect MODELFILE` lists the names.
* **`BS.Network.CloneFunction (inputNodes, outputNodes, parameters = "learnable")`** is a function
  with one positional parameter per input node. Each call copies the part of the graph between the
  input nodes and the output nodes, with the call's arguments in place of the input nodes, and
  returns the copy of `outputNodes` (a node, or a record of nodes mirroring a record). Parameters
  are copied with their current values and remain learnable (`"learnable"`, each keeping its
  learningRateMultiplier), copied and frozen (`"constant"`: learningRateMultiplier 0), or not copied
  (`"shared"`: the copy reads the very parameter nodes of the source, so every call, and the source,
  train one set of values). The source network is never changed. Copies are named after the call's
  expression path and the source name (`model.convOut.conv1.W`); shapes are inferred again, so a
  convolutional part trained on 32×32 crops applies to larger images. Every input the output nodes
  read must be one of `inputNodes`.
* **`BS.Network.Edit (inputModel, editFunctions, additionalRoots)`**: each node of the model is
  offered to the edit functions in turn (`node => node'`); the first that returns another node
  replaces it. Every node that reads a replaced node, directly or through others, is copied and
  relinked; untouched nodes are shared with the model. The result is a new network with the model's
  special nodes (mapped through the edits) and `additionalRoots`. `BS.Network.Editing` has the usual
  edit functions (`ReplaceLinksToNode`, `ReplaceLinksToNamedNode`).

Freezing without cloning is `learningRateMultiplier = 0` on a parameter (compiler/graph/leaves.py):
the trainer's flat buffer never updates it and the plan computes no gradient for it.
"""
from __future__ import annotations

import re

import numpy as np

from netlang.compiler.graph import network as networks
from netlang.compiler.graph import shapeinfer
from netlang.compiler.lang import values
from netlang.compiler.lang.nodes import BuildContext
from netlang.errors import EvalError, suggest
from netlang.ir.graph import BATCH, TAG_GROUPS, Network, Node, depth_first
from netlang.ops.registry import is_delay, op_of

PARAMETER_MODES = ("learnable", "constant", "shared")
_RECORD_SPELLING = re.compile(r"[.\[\]]")


# ---- a network as a record --------------------------------------------------------------------------

def member_name(node_name: str) -> str:
    """How a node named `node_name` is reached as a member of its network (`conv1.W` → `conv1_W`)."""
    return _RECORD_SPELLING.sub("_", node_name)


def network_member(network: Network, name: str, ctx: BuildContext) -> Node:
    """`net.name`: the node called `name`, or whose name is `name` with `_` for `.`, `[` and `]`."""
    node = network.node(name)
    if node is not None:
        return node
    matches = [n for n in network.nodes if member_name(n.name) == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise EvalError(f"'{name}' names several nodes of the network: "
                        f"{', '.join(n.name for n in matches)}", ctx.span)
    raise EvalError(f"the network has no node '{name}'", ctx.span,
                    hint=suggest(name, [member_name(n.name) for n in network.nodes], case_insensitive=False)
                    or "netlang inspect MODELFILE lists the nodes of a model")


# ---- CloneFunction ----------------------------------------------------------------------------------

def clone_function(record, ctx: BuildContext) -> values.Lambda:
    """`new CloneFunctionConfigLambda [ inputNodes ; outputNodes ; parameters ]` (the arguments of
    BS.Network.CloneFunction)."""
    inputs = _nodes_of(record.find("inputNodes"), "inputNodes", ctx)
    outputs = record.find("outputNodes")
    mode = record.find("parameters")
    if mode is None:
        mode = "learnable"
    if mode not in PARAMETER_MODES:
        raise EvalError(f"CloneFunction: parameters must be one of {', '.join(PARAMETER_MODES)}, got '{mode}'",
                        ctx.span, hint=suggest(str(mode), PARAMETER_MODES))
    output_nodes = _output_nodes(outputs, ctx)
    body = _function_body(inputs, list(output_nodes.values()), ctx)
    params = ["input"] if len(inputs) == 1 else [f"input{i}" for i in range(len(inputs))]

    def call(args, span, caller_path):
        actual = [_argument(args.get(p), p, span) for p in params]
        copies = _copy_body(body, dict(zip((n.id for n in inputs), actual)), mode, str(caller_path), span)
        if isinstance(outputs, values.Record):
            result = values.Record(None, caller_path, span)
            for name, node in output_nodes.items():
                result.add(name, values.Thunk.of(copies[node.id], name, span))
            return result
        return copies[output_nodes[""].id]

    return values.Lambda(params, {}, None, call, ctx.span, "CloneFunction", ctx.path)


def _nodes_of(value, what: str, ctx: BuildContext) -> list[Node]:
    items = value.items() if isinstance(value, values.Array) else [value]
    flat = []
    for item in items:
        if isinstance(item, values.Array):
            flat += _nodes_of(item, what, ctx)
        elif isinstance(item, Node):
            flat.append(item)
        else:
            raise EvalError(f"{what} must be nodes, got a {values.type_name(item)}", ctx.span,
                            hint="e.g. BS.Network.CloneFunction (model.features, model.conv3)")
    if not flat:
        raise EvalError(f"{what} is empty", ctx.span)
    return flat


def _output_nodes(outputs, ctx: BuildContext) -> dict[str, Node]:
    """The output nodes by the member that holds them ("" for a single node)."""
    if isinstance(outputs, Node):
        return {"": outputs}
    if not isinstance(outputs, values.Record):
        raise EvalError(f"CloneFunction: outputNodes must be a node or a record of nodes, got a "
                        f"{values.type_name(outputs)}", ctx.span)
    nodes = {name: value for name in outputs.names() if isinstance(value := outputs.get(name), Node)}
    if not nodes:
        raise EvalError("CloneFunction: the outputNodes record holds no nodes", ctx.span)
    return nodes


def _function_body(inputs: list[Node], outputs: list[Node], ctx: BuildContext) -> list[Node]:
    """The nodes between the inputs and the outputs, every node after the nodes it reads (a delay's
    loop-closing input may come later); an input it reads that is not listed is an error now."""
    stop = {n.id for n in inputs}
    networks.attach_late_inputs(outputs)
    body = depth_first(outputs, lambda node: [] if node.id in stop else node.inputs)
    for node in body:
        if node.id not in stop and not node.inputs and not node.is_parameter:
            raise EvalError(f"CloneFunction: the output nodes read '{node.name}', which is not one of the "
                            "inputNodes", ctx.span,
                            hint="list every input the cloned part reads in inputNodes, e.g. (m.features : m.rois)")
    return [n for n in body if n.id not in stop]


def _argument(value, param: str, span) -> Node:
    if isinstance(value, Node):
        return value
    raise EvalError(f"a cloned function takes nodes; argument '{param}' is a {values.type_name(value)}", span)


def _copy_body(body: list[Node], replaced: dict[int, Node], mode: str, path: str, span) -> dict[int, Node]:
    """Copies of the body's nodes (by source id), reading `replaced` where the source reads an input."""
    prefix = f"{path}." if path else ""
    copies = dict(replaced)
    for node in body:
        if node.is_parameter:
            copies[node.id] = node if mode == "shared" else _copy_parameter(node, prefix + node.name, mode)
        else:
            copies[node.id] = Node(node.op, [], dict(node.attrs), name=prefix + node.name, span=span,
                                   shape=node.shape if is_delay(node) else (), layout=BATCH if is_delay(node) else None)
    for node in body:
        if not node.is_parameter:
            copies[node.id].inputs = [copies.get(i.id, i) for i in node.inputs]
    for node in body:
        if not node.is_parameter and not is_delay(node):
            shapeinfer.infer_eagerly(copies[node.id])
    return copies


def _copy_parameter(node: Node, name: str, mode: str) -> Node:
    copy = Node(node.op, [], dict(node.attrs), name=name, span=node.span, shape=node.shape)
    copy.is_parameter = True
    copy.value = None if node.value is None else np.array(node.value, copy=True)
    copy.learning_rate_multiplier = 0.0 if mode == "constant" else node.learning_rate_multiplier
    if mode == "constant":
        copy.attrs["learningRateMultiplier"] = 0.0
    return copy


# ---- Edit ---------------------------------------------------------------------------------------------

def edit_network(record, ctx: BuildContext) -> Network:
    """`new ComputationNetworkWithEdits [ inputModel ; editFunctions ; additionalRoots ]`."""
    model = record.find("inputModel")
    if not isinstance(model, Network):
        raise EvalError(f"BS.Network.Edit: inputModel must be a network, got a {values.type_name(model)}", ctx.span,
                        hint="e.g. BS.Network.Edit (BS.Network.Load (\"model.dnn\"), …)")
    functions = _edit_functions(record.find("editFunctions"), ctx)
    replaced = {}
    for node in model.nodes:
        for function in functions:
            result = function.call([node], {}, ctx.span, ctx.path)
            if not isinstance(result, Node):
                raise EvalError(f"BS.Network.Edit: an edit function returned a {values.type_name(result)} for node "
                                f"'{node.name}', not a node", ctx.span, hint="an edit function returns the node "
                                "unchanged or its replacement: (node => if … then replacement else node)")
            if result is not node:
                replaced[node.id] = result
                break
    mapped = _relink(model, replaced)
    groups = {g: [mapped.get(n.id, n) for n in model.groups.get(g, [])] for g in TAG_GROUPS}
    read = {i.id for n in model.nodes for i in n.inputs}
    roots = [mapped.get(n.id, n) for n in model.nodes if n.id not in read]
    extra = record.find("additionalRoots")
    if extra is not None and extra is not values.NONE:
        roots += _nodes_of(extra, "additionalRoots", ctx)
    for group, nodes in groups.items():
        for node in nodes:
            node.tags.add(group)
    return networks.finish_network(roots + [n for ns in groups.values() for n in ns], groups, ctx.span)


def _edit_functions(value, ctx: BuildContext) -> list[values.Lambda]:
    items = value.items() if isinstance(value, values.Array) else [value]
    for item in items:
        if not isinstance(item, values.Lambda):
            raise EvalError(f"BS.Network.Edit: editFunctions must be functions, got a {values.type_name(item)}",
                            ctx.span, hint="e.g. BS.Network.Editing.ReplaceLinksToNode (model.z, newZ)")
    return list(items)


def _relink(model: Network, replaced: dict[int, Node]) -> dict[int, Node]:
    """Source id → the node that stands for it: the replacement, or a copy of every node that reads a
    replaced node (through any number of others, loops included)."""
    changed = set(replaced)
    growing = True
    while growing:
        growing = False
        for node in model.nodes:
            if node.id not in changed and any(i.id in changed for i in node.inputs):
                changed.add(node.id)
                growing = True
    mapped = dict(replaced)
    for node in model.nodes:
        if node.id in changed and node.id not in replaced:
            mapped[node.id] = Node(node.op, [], dict(node.attrs), name=node.name, span=node.span,
                                   shape=node.shape if is_delay(node) else (), tags=set(node.tags),
                                   layout=BATCH if is_delay(node) else None)
    for node in model.nodes:
        if node.id in mapped and node.id not in replaced:
            mapped[node.id].inputs = [mapped.get(i.id, i) for i in node.inputs]
    for node in model.nodes:
        if node.id in mapped and node.id not in replaced and not is_delay(node) and not op_of(node).leaf:
            shapeinfer.infer_eagerly(mapped[node.id])
    return mapped
