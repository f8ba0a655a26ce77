"""What the train, eval and write actions share: backend, network or model, readers, seeds.

Relative data and model paths are taken relative to the working directory, as CNTK does.
"""
from __future__ import annotations

import os

import numpy as np

from netlang.compiler.graph.modelcheck import load_checked_model
from netlang.compiler.lang.settings import ReaderSettings
from netlang.errors import ConfigError, NetworkError, UsageError, suggest
from netlang.ir.graph import Network
from netlang.readers.factory import create_source
from netlang.runtime.backend import Backend, select_backend
from netlang.runtime.feeding import check_streams


def backend_for(view) -> Backend:
    backend = select_backend(view.deviceId, view.precision)
    backend.allow_tf32(view.allowTF32)
    return backend


def load_model(path: str):
    """A trained model file: its network and parameters (and node state such as statistics), checked
    to be a graph netlang can run (a damaged or crafted file is a DataError, exit 65)."""
    return load_checked_model(path)


def create_reader(reader: ReaderSettings, network: Network, *, epoch_size: int | None = None,
                  randomize: bool | None = None, dtype=np.float32, prefetch: bool = True,
                  truncation: tuple | None = None):
    """A minibatch source for `network`'s inputs; a stream that does not match its Input is an error
    at the Input's line (CNTK: "InputValue operation had its row dimension changed by the reader").
    `truncation` (from `truncation_settings`) packs windows for truncated BPTT; only training asks for
    it — evaluation reads whole sequences whatever the reader block says."""
    # Windows cut every stream a sequence has; a stream the network does not read (an intent label
    # beside the words) must not stand in the way, so truncated reading carries the inputs only.
    wanted = {node.name: 0 for node in network.inputs} if truncation is not None else None
    source = create_source(reader, os.getcwd(), epoch_size=epoch_size, randomize=randomize,
                           dtype=dtype, prefetch=prefetch, truncation=truncation, streams_wanted=wanted,
                           distributions=distribution_inputs(network))
    try:
        check_streams(network, source.stream_infos(), reader.block_span)
    except BaseException:
        close = getattr(source, "close", None)
        if close:
            close()
        raise
    return source


def distribution_inputs(network: Network) -> dict[str, str]:
    """Inputs that a CrossEntropyWithSoftmax reads as its label distribution -> that node's name. With a
    class axis (`axis = 1`: a label per region) a sample holds one distribution per position, which the
    reader's per-sample check does not know, so those are left out."""
    return {node.inputs[0].name: f"CrossEntropyWithSoftmax '{node.name}'" for node in network.nodes
            if node.op == "CrossEntropyWithSoftmax" and node.inputs and node.inputs[0] in network.inputs
            and not node.attrs.get("axis")}


def select_nodes(network: Network, names, default_groups: tuple[str, ...], what: str, span=None) -> list:
    if names:
        nodes = []
        for name in names:
            node = network.node(name)
            if node is None:
                raise NetworkError(f"no node named '{name}' ({what})", span,
                                   hint=suggest(name, [n.name for n in network.nodes], False))
            nodes.append(node)
        return nodes
    nodes = []
    for group in default_groups:
        nodes += [n for n in network.groups.get(group, []) if n not in nodes]
    if not nodes:
        raise NetworkError(f"the model has no {' or '.join(default_groups)} nodes to use for {what}", span,
                           hint=f"name them with {what}")
    return nodes


def model_for_evaluation(view, backend: Backend):
    """(network, parameters, node state) of a trained model: `modelPath` (the file), as CNTK does."""
    path = view.modelPath
    if not path:
        raise ConfigError("this action needs modelPath", hint="set modelPath at the top level or in the block")
    model = load_model(path)
    return model.network, {k: backend.from_host(v, backend.dtype) for k, v in model.parameters.items()}, model.state


def action_with_network(config, name: str | None = None):
    """(name, view) of the action `name`, or of the first action of `command` that has a network of
    its own (time, graph, export look at one network)."""
    actions = config.actions()
    if name is not None:
        chosen = [(n, v) for n, v in actions if n.lower() == name.lower()]
        if not chosen:
            raise UsageError(f"no action '{name}' in command = …",
                             hint=suggest(name, [n for n, _ in actions]) or "name one of: " +
                             ", ".join(n for n, _ in actions))
        if chosen[0][1].network_expr() is None:
            raise ConfigError(f"action '{name}' has no network of its own", chosen[0][1].span,
                              hint="name an action with a network (usually the train action)")
        return chosen[0]
    for action_name, view in actions:
        if view.network_expr() is not None:
            return action_name, view
    raise ConfigError("no action of command = … has a network", config.top.span_of("command"),
                      hint="name an action with --action, or list a train action in command")
