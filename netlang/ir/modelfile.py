"""Model and checkpoint files: self-describing, loadable without the config, and never pickled.

A model file is a NumPy `.npz` archive (a zip of `.npy` arrays, read with `allow_pickle=False`):

* `__netlang__`  a JSON document (stored as a uint8 array): format version, the graph (per node: op,
                 input names, attributes, name, shape, layout, tags, learning-rate multiplier) and the
                 special node groups;
* `param/<name>` the value of each parameter in run-time layout (row-major, axes reversed).

A checkpoint adds `state/<key>` arrays (learner buffers, residuals …) and a JSON `training` entry
(epoch, reader position, random state). Every write goes to a temporary file in the same directory
and is renamed into place, so a crash never leaves a half-written model behind.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Mapping

import numpy as np

from netlang.errors import DataError, DataPosition
from netlang.ir.graph import BATCH, TAG_GROUPS, Network, Node, SeqAxis

FORMAT = "netlang-model"
FORMAT_VERSION = 1


# ---- graph <-> JSON ------------------------------------------------------------------------------

def _attr_to_json(value):
    if isinstance(value, SeqAxis):
        return {"__seqaxis__": value.name}
    if isinstance(value, tuple):
        return {"__tuple__": [_attr_to_json(v) for v in value]}
    if isinstance(value, np.ndarray):
        return None  # values live in the parameter arrays
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, list):
        return [_attr_to_json(v) for v in value]
    return str(value)


def _attr_from_json(value):
    if isinstance(value, dict):
        if "__seqaxis__" in value:
            return SeqAxis(value["__seqaxis__"])
        if "__tuple__" in value:
            return tuple(_attr_from_json(v) for v in value["__tuple__"])
    if isinstance(value, list):
        return [_attr_from_json(v) for v in value]
    return value


def _layout_to_json(layout):
    if layout is None:
        return None
    return "#" if layout is BATCH else {"seq": layout.name}


def _layout_from_json(value):
    if value is None:
        return None
    return BATCH if value == "#" else SeqAxis(value["seq"])


def graph_to_json(network: Network) -> dict:
    nodes = []
    for n in network.nodes:
        nodes.append({
            "name": n.name, "op": n.op, "inputs": [i.name for i in n.inputs],
            "attrs": {k: _attr_to_json(v) for k, v in n.attrs.items() if not isinstance(v, np.ndarray)},
            "shape": list(n.shape), "layout": _layout_to_json(n.layout), "tags": sorted(n.tags),
            "parameter": n.is_parameter, "learningRateMultiplier": n.learning_rate_multiplier,
        })
    return {"nodes": nodes, "groups": {g: [n.name for n in network.groups.get(g, [])] for g in TAG_GROUPS}}


def graph_from_json(doc: dict) -> Network:
    by_name: dict[str, Node] = {}
    pending = []
    for entry in doc["nodes"]:
        node = Node(entry["op"], [], {k: _attr_from_json(v) for k, v in entry["attrs"].items()},
                    name=entry["name"], shape=tuple(entry["shape"]), layout=_layout_from_json(entry["layout"]),
                    tags=set(entry["tags"]))
        node.is_parameter = entry["parameter"]
        node.learning_rate_multiplier = entry["learningRateMultiplier"]
        by_name[node.name] = node
        pending.append((node, entry["inputs"]))
    for node, inputs in pending:
        node.inputs = [by_name[i] for i in inputs]
    groups = {g: [by_name[name] for name in doc["groups"].get(g, [])] for g in TAG_GROUPS}
    return Network(nodes=[n for n, _ in pending], groups=groups)


# ---- files ---------------------------------------------------------------------------------------

def atomic_write(path: str, write) -> None:
    """Call `write(fileobj)` on a temporary file next to `path`, then rename it into place."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _json_array(doc) -> np.ndarray:
    return np.frombuffer(json.dumps(doc).encode("utf-8"), dtype=np.uint8)


def save_model(path: str, network: Network, parameters: Mapping[str, np.ndarray], *,
               state: Mapping[str, np.ndarray] | None = None, training: dict | None = None,
               meta: dict | None = None) -> None:
    header = {"format": FORMAT, "version": FORMAT_VERSION, "graph": graph_to_json(network), "meta": meta or {}}
    arrays = {"__netlang__": _json_array(header)}
    for name, value in parameters.items():
        arrays[f"param/{name}"] = np.asarray(value)
    for key, value in (state or {}).items():
        arrays[f"state/{key}"] = np.asarray(value)
    if training is not None:
        arrays["__training__"] = _json_array(training)

    def write(fh):
        np.savez(fh, **arrays)

    atomic_write(path, write)


class ModelFile:
    """A loaded model or checkpoint file."""

    def __init__(self, network: Network, parameters: dict, state: dict, training: dict | None, meta: dict):
        self.network = network
        self.parameters = parameters
        self.state = state
        self.training = training
        self.meta = meta


def load_model(path: str) -> ModelFile:
    if not os.path.exists(path):
        raise DataError("model file not found", DataPosition(path),
                        hint="train first (netlang train cfg.net) or check modelPath")
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(bytes(archive["__netlang__"]).decode("utf-8"))
            if header.get("format") != FORMAT:
                raise DataError("not a netlang model file", DataPosition(path))
            if header.get("version", 0) > FORMAT_VERSION:
                raise DataError(f"model format version {header['version']} is newer than this netlang "
                                f"understands ({FORMAT_VERSION})", DataPosition(path), hint="upgrade netlang")
            params, state, training = {}, {}, None
            for key in archive.files:
                if key.startswith("param/"):
                    params[key[6:]] = archive[key]
                elif key.startswith("state/"):
                    state[key[6:]] = archive[key]
                elif key == "__training__":
                    training = json.loads(bytes(archive[key]).decode("utf-8"))
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as exc:
        raise DataError(f"cannot read model file: {exc}", DataPosition(path),
                        hint="the file is damaged or not a netlang model") from None
    network = graph_from_json(header["graph"])
    return ModelFile(network, params, state, training, header.get("meta", {}))
