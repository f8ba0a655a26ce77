"""The Python API: configs, trained models, training and evaluation from Python.

    model = netlang.load_model("out/mnist/model.dnn")      # a trained model file
    z = model.predict({"features": x})["z"]                # output node values (NumPy)
    model.nodes, model.parameters                          # its nodes; parameter arrays by name

    results = netlang.train("cfg.net", ["SGD.maxEpochs=2"])   # {block: [per-epoch figures]}
    metrics = netlang.evaluate("cfg.net")                     # {block: {"metrics", "samples"}}

    config = netlang.load("cfg.net", ["SGD.maxEpochs=2"])
    net = config.network("train")                 # the network of an action, freshly initialised
    trained = config.trained("test")              # the model file an action reads (its modelPath)
    out = net.forward({"features": x})            # output node values (NumPy)
    grads = net.gradients({"features": x, "labels": y})   # d criterion / d parameter, by name

Input arrays are in run-time layout: `[N, *reversed(BS shape)]` for batch inputs (an image input
`28:28:1` takes `[N, 1, 28, 28]`), `[T, N, ...]` for sequences; a flat `[N, dim]` array is
accepted too.

`device` is where the network runs, as `deviceId` says it: `"cpu"`, `"auto"` (a GPU when CuPy
sees one, else the CPU) or a GPU index. Inputs may be NumPy arrays; results come back as NumPy
arrays.

Ops of your own, in Python: a module registers them with the op registry
(`netlang.ops.registry.register(OpDef(...))`, see examples/user_ops.py) and a config names it in
`opModules`; `load_model(path, op_modules=[...])` imports them for a model file that uses them.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Mapping, Sequence

import numpy as np

from netlang.actions.table import blocks_of, command_named
from netlang.compiler.graph import evaluate_text, load_config
from netlang.compiler.graph.modelcheck import checked_model
from netlang.compiler.graph.network import build_action_network, network_from_value
from netlang.compiler.graph.user_ops import import_op_modules
from netlang.errors import NetworkError, UsageError, suggest
from netlang.ir import modelfile
from netlang.ir.graph import Network, Node
from netlang.ops import registry
from netlang.runtime.backend import select_backend
from netlang.runtime.executor import Executor
from netlang.runtime.progress import Progress


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
        """The network of `action` (default: the first action that has one), freshly initialised
        from `seed`; `trained` loads the parameters a training wrote."""
        for name, view in self._candidates(action):
            ref = view.network_expr()
            if ref is not None:
                network = build_action_network(ref)
                return NetworkRunner(network, precision or self._precision or "double", seed,
                                     device=self._device if device is None else device)
        raise UsageError("no action of this config defines a network")

    def trained(self, action: str | None = None, device: str | int | None = None,
                precision: str = "float") -> "TrainedModel":
        """The trained model of `action` (default: the first action): the file its modelPath names."""
        name, view = self._candidates(action)[0]
        if not view.modelPath:
            raise UsageError(f"action '{name}' has no modelPath")
        return load_model(view.modelPath, self._device if device is None else device, precision)

    def _candidates(self, action: str | None) -> list:
        candidates = self.config.actions()
        if action is not None:
            candidates = [(n, v) for n, v in candidates if n == action]
            if not candidates:
                raise UsageError(f"no action '{action}'", hint=suggest(action, self.actions, False))
        return candidates


class TrainedModel(NetworkRunner):
    """A model file: its network with the trained parameters and node state (batch-norm statistics)."""

    def __init__(self, path: str, device: str | int = "auto", precision: str = "float"):
        model = modelfile.load_model(path)
        _require_known_ops(model.network, path)        # an op of the user's: say how to import it
        model = checked_model(model, path)
        super().__init__(model.network, precision, parameters=model.parameters, device=device)
        self.executor.load_state_arrays(model.state)
        self.path = path
        self.meta = model.meta

    def predict(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The values of the output nodes (or of the nodes named in `outputs`) for `inputs`, in
        inference mode (dropout off, batch normalisation with its running statistics)."""
        return self.forward(inputs, outputs, training=False)

    @property
    def nodes(self) -> list[Node]:
        """Every node of the network (name, op, shape, inputs), inputs before the nodes that read them."""
        return list(self.network.nodes)

    @property
    def parameters(self) -> dict[str, np.ndarray]:
        """The trained parameter values by node name, as NumPy arrays in run-time layout."""
        return {name: self.backend.to_host(value) for name, value in self.executor.parameters.items()}


def _require_known_ops(network: Network, path: str) -> None:
    unknown = sorted({n.op for n in network.nodes if registry.get(n.op) is None})
    if unknown:
        raise NetworkError(f"{path}: the model uses op {', '.join(unknown)}, which no imported module registers",
                           hint="pass op_modules=[...] (the config's opModules) to load_model")


def load_model(path: str, device: str | int = "auto", precision: str = "float",
               op_modules: Sequence[str] = ()) -> TrainedModel:
    """A trained model file (`<modelPath>` or `<modelPath>.<epoch>`), ready to predict; `op_modules`
    are imported first when the model uses ops of your own."""
    import_op_modules(op_modules)
    return TrainedModel(path, device, precision)


def train(path: str, overrides: Sequence[str] = (), progress: bool = False,
          resume_anyway: bool = False) -> dict[str, list[dict]]:
    """Run the train blocks of a config's `command`, as `netlang train` does (`resume_anyway` as
    --resume-anyway); returns, per block, one dict per epoch trained: epoch, samples, criterion,
    metrics, seconds, learning_rate, cv."""
    results = _run_blocks("train", path, overrides, progress, resume_anyway=resume_anyway)
    return {name: [dataclasses.asdict(epoch) for epoch in epochs] for name, epochs in results.items()}


def evaluate(path: str, overrides: Sequence[str] = ()) -> dict[str, dict]:
    """Run the test/eval blocks of a config's `command`, as `netlang eval` does; returns, per block,
    what `netlang eval --json` prints: {"metrics": {node: per-sample average}, "samples": N, ...}."""
    return _run_blocks("eval", path, overrides, False)


def _run_blocks(command_name: str, path: str, overrides: Sequence[str], progress: bool, **options) -> dict:
    config = load_config(path, tuple(overrides))
    command = command_named(command_name)
    reporter = Progress(enabled=progress, bar=False)
    args = argparse.Namespace(**options)          # what the command's options would say
    try:
        return {name: command.block_runner(config, name, view, reporter, args)
                for name, view in blocks_of(config, command)}
    finally:
        reporter.close()


def load(path: str, overrides: Sequence[str] = (), precision: str | None = None,
         device: str | int = "cpu") -> Model:
    """Parse, evaluate and validate a config file (with `key=value` overrides)."""
    return Model(load_config(path, tuple(overrides)), precision, device)


def load_text(text: str, name: str = "<string>", overrides: Sequence[str] = (),
              device: str | int = "cpu") -> NetworkRunner:
    """Build the network described by `text`, a record of network members (tests, notebooks)."""
    record = evaluate_text(text, name, overrides=tuple(overrides))
    return NetworkRunner(network_from_value(record), device=device)
