"""The Python API, for tests and embedding.

    model = netlang.load("cfg.net", ["SGD.maxEpochs=2"])
    net = model.network("train")               # the network of an action
    out = net.forward({"features": x})         # output node values (NumPy)
    grads = net.gradients({"features": x, "labels": y})   # d criterion / d parameter, by name

Input arrays are in run-time layout: `[N, *reversed(BS shape)]` for batch inputs (an image input
`28:28:1` takes `[N, 1, 28, 28]`); a flat `[N, dim]` array is accepted too.

`device` is where the network runs, as `deviceId` says it: `"cpu"` (the default), `"auto"` (a GPU
when CuPy sees one, else the CPU) or a GPU index. Inputs may be NumPy arrays; results come back
as NumPy arrays.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from netlang.compiler.graph import evaluate_text, load_config
from netlang.compiler.graph.network import build_action_network, network_from_value
from netlang.errors import NetworkError, UsageError, suggest
from netlang.ir.graph import Network, Node
from netlang.runtime.backend import select_backend
from netlang.runtime.executor import Executor


class NetworkRunner:
    """A network plus an executor with its own parameters (initialised from the network's seed)."""

    def __init__(self, network: Network, precision: str = "double", seed: int = 1, parameters=None,
                 device: str | int = "cpu"):
        self.network = network
        self.backend = select_backend(device, precision)
        params = None
        if parameters is not None:
            params = {k: self.backend.from_host(v, self.backend.dtype) for k, v in parameters.items()}
        self.executor = Executor(network, self.backend, params, seed=seed)

    @property
    def parameters(self) -> dict:
        """The parameter arrays the executor computes with (on the device)."""
        return self.executor.parameters

    def node(self, name: str) -> Node:
        node = self.network.node(name)
        if node is None:
            raise NetworkError(f"no node named '{name}'", hint=suggest(name, [n.name for n in self.network.nodes], False))
        return node

    def _nodes(self, names: Sequence[str] | None, group: str) -> list[Node]:
        if names is None:
            nodes = self.network.groups.get(group) or []
            if not nodes:
                raise UsageError(f"the network has no {group} nodes; name the nodes you want")
            return list(nodes)
        return [self.node(n) for n in names]

    def forward(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
                training: bool = False) -> dict[str, np.ndarray]:
        nodes = self._nodes(outputs, "output")
        values, _ = self.executor.run(inputs, nodes, training=training)
        return {name: self.backend.to_host(v) for name, v in values.items()}

    def gradients(self, inputs: Mapping[str, np.ndarray], loss: str | None = None,
                  wrt: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        loss_node = self._nodes(None if loss is None else [loss], "criterion")[0]
        targets = [self.node(n) for n in wrt] if wrt is not None else \
            [p for p in self.network.parameters if p.learning_rate_multiplier > 0]
        _, grads = self.executor.run(inputs, [], loss=loss_node, wrt=targets, training=True)
        return {name: self.backend.to_host(g) for name, g in grads.items()}


class Model:
    """A loaded config: its validated settings and, on demand, the network of each action."""

    def __init__(self, config, precision: str | None = None, device: str | int = "cpu"):
        self.config = config
        self._precision = precision
        self._device = device

    @property
    def actions(self) -> list[str]:
        return [name for name, _ in self.config.actions()]

    def network(self, action: str | None = None, precision: str | None = None, seed: int = 1,
                device: str | int | None = None) -> NetworkRunner:
        candidates = self.config.actions()
        if action is not None:
            candidates = [(n, v) for n, v in candidates if n == action]
            if not candidates:
                raise UsageError(f"no action '{action}'", hint=suggest(action, self.actions, False))
        for name, view in candidates:
            ref = view.network_expr()
            if ref is not None:
                network = build_action_network(ref)
                return NetworkRunner(network, precision or self._precision or "double", seed,
                                     device=self._device if device is None else device)
        raise UsageError("no action of this config defines a network")


def load(path: str, overrides: Sequence[str] = (), precision: str | None = None,
         device: str | int = "cpu") -> Model:
    """Parse, evaluate and validate a config file (with `key=value` overrides)."""
    return Model(load_config(path, tuple(overrides)), precision, device)


def load_text(text: str, name: str = "<string>", overrides: Sequence[str] = (),
              device: str | int = "cpu") -> NetworkRunner:
    """Build the network described by `text`, a record of network members (tests, notebooks)."""
    record = evaluate_text(text, name, overrides=tuple(overrides))
    return NetworkRunner(network_from_value(record), device=device)
