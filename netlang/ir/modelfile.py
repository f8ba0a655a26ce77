"""Model and checkpoint files: self-describing, loadable without the config, and never pickled.

A model file is a NumPy `.npz` archive (a zip of `.npy` arrays, read with `allow_pickle=False`):

* `__netlang__`  a JSON document (stored as a uint8 array): format version, the graph (per node: op,
                 input names, attributes, name, shape, layout, tags, learning-rate multiplier) and the
                 special node groups;
* `param/<name>` the value of each parameter in run-time layout (row-major, axes reversed).

A checkpoint adds `state/<key>` arrays (learner buffers, residuals …) and a JSON `training` entry
(epoch, reader position, random state). Every write goes to a temporary file in the same directory
and is renamed into place, so a crash never leaves a half-written model behind.

A model file is data from anywhere, so loading checks it: members are plain numeric `.npy` arrays
stored as `np.savez` stores them, exactly as long as their headers say; the graph names only valid
node names (no path separators can come from a model), inputs and groups name nodes of the model,
and every parameter has a value of its shape. Anything else is a "damaged model file" DataError
(exit 65) naming the part. Whether the ops exist and the shapes follow from the ops' rules is
checked above this layer (compiler/graph/modelcheck.py), where the op registry is known.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from tokenize import TokenError
from typing import Mapping

import numpy as np

from netlang.errors import DataError, DataPosition, OutputError
from netlang.ir.graph import BATCH, TAG_GROUPS, Network, Node, SeqAxis, is_node_name
from netlang.ir.shapes import to_runtime

FORMAT = "netlang-model"
FORMAT_VERSION = 1
MAX_RANK = 16                  # more axes, or a larger dimension, than any model has: a damaged file
MAX_DIM = 1 << 40


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
        if set(value) == {"__seqaxis__"} and isinstance(value["__seqaxis__"], str):
            return SeqAxis(value["__seqaxis__"])
        if set(value) == {"__tuple__"} and isinstance(value["__tuple__"], list):
            return tuple(_attr_from_json(v) for v in value["__tuple__"])
        raise ValueError("an attribute is an unknown kind of object")
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
    if value == "#":
        return BATCH
    if isinstance(value, dict) and set(value) == {"seq"} and isinstance(value["seq"], str):
        return SeqAxis(value["seq"])
    raise ValueError(f"unknown dynamic axis {value!r:.40}")


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


class DamagedModel(Exception):
    """What is wrong with one part of a model file; `load_model` makes it a DataError."""

    def __init__(self, part: str, message: str):
        super().__init__(f"{part}: {message}")


_NODE_KEYS = {"name", "op", "inputs", "attrs", "shape", "layout", "tags", "parameter", "learningRateMultiplier"}


def graph_from_json(doc: dict) -> Network:
    """The network of a model file's graph document; DamagedModel names the first part that is not
    what netlang writes (a node name that is no node name, an input that names no node, …)."""
    entries = _field(doc, "graph", "nodes", list)
    by_name: dict[str, Node] = {}
    pending = []
    for index, entry in enumerate(entries):
        node = _node_from_json(entry, f"node {index + 1}")
        if node.name in by_name:
            raise DamagedModel(f"node '{node.name}'", "the name is used twice")
        by_name[node.name] = node
        pending.append((node, entry["inputs"]))
    for node, inputs in pending:
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise DamagedModel(f"node '{node.name}'", "its inputs are not a list of node names")
        missing = next((i for i in inputs if i not in by_name), None)
        if missing is not None:
            raise DamagedModel(f"node '{node.name}'", f"input '{missing:.100}' names no node of the model")
        node.inputs = [by_name[i] for i in inputs]
    groups = _field(doc, "graph", "groups", dict)
    for group, names in groups.items():
        if group not in TAG_GROUPS or not isinstance(names, list) or not all(n in by_name for n in names):
            raise DamagedModel(f"group '{group:.100}'", "it is not a list of the model's nodes")
    return Network(nodes=[n for n, _ in pending],
                   groups={g: [by_name[name] for name in groups.get(g, [])] for g in TAG_GROUPS})


def _field(doc, part: str, key: str, kind):
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, kind):
        raise DamagedModel(part, f"'{key}' is missing or not a {kind.__name__}")
    return value


def _node_from_json(entry, part: str) -> Node:
    if not isinstance(entry, dict) or set(entry) != _NODE_KEYS:
        raise DamagedModel(part, "not a node description")
    name = entry["name"]
    if not is_node_name(name):
        raise DamagedModel(part, f"{_quoted(name)} is not a node name")
    part = f"node '{name}'"
    op, shape, tags = entry["op"], entry["shape"], entry["tags"]
    if not (isinstance(op, str) and op.isidentifier()):
        raise DamagedModel(part, f"{_quoted(op)} is not an operation")
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK and
            all(type(d) is int and 0 < d < MAX_DIM for d in shape)):
        raise DamagedModel(part, f"the shape {str(shape):.60} is not a list of dimensions")
    if not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise DamagedModel(part, "its tags are not a list of names")
    multiplier = entry["learningRateMultiplier"]
    if type(entry["parameter"]) is not bool or isinstance(multiplier, bool) or \
            not isinstance(multiplier, (int, float)) or not math.isfinite(multiplier):
        raise DamagedModel(part, "'parameter' or 'learningRateMultiplier' is not what netlang writes")
    if not isinstance(entry["attrs"], dict):
        raise DamagedModel(part, "its attributes are not a record")
    try:
        attrs = {k: _attr_from_json(v) for k, v in entry["attrs"].items()}
        layout = _layout_from_json(entry["layout"])
    except (ValueError, RecursionError) as exc:
        raise DamagedModel(part, str(exc)) from None
    node = Node(op, [], attrs, name=name, shape=tuple(shape), layout=layout, tags=set(tags))
    node.is_parameter = entry["parameter"]
    node.learning_rate_multiplier = float(multiplier)
    return node


def _quoted(value) -> str:
    return f"'{value:.100}'" if isinstance(value, str) else f"a {type(value).__name__}"


# ---- files ---------------------------------------------------------------------------------------

def atomic_write(path: str, write) -> None:
    """Call `write(fileobj)` on a temporary file next to `path`, then rename it into place. A file
    that cannot be written (no such directory, no permission, disk full) is an OutputError (exit 73)."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _output_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _output_error(path, exc) from None
        raise


def _output_error(path: str, exc: OSError) -> OutputError:
    return OutputError(f"cannot write '{path}': {exc.strerror or exc}",
                       hint="the directory must exist or be creatable, be writable, and the disk must have room")


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


DAMAGED_HINT = "the file is damaged or was not written by netlang; train again, or use an intact copy"


def load_model(path: str) -> ModelFile:
    """Read a model or checkpoint file. Whatever is wrong with it is a DataError (exit 65) that says
    which part is damaged; nothing in the file is ever unpickled or executed."""
    if not os.path.exists(path):
        raise DataError("model file not found", DataPosition(path),
                        hint="train first (netlang train cfg.net) or check modelPath")
    try:
        return _load(path)
    except DamagedModel as exc:
        raise DataError(f"damaged model file: {exc}", DataPosition(path), hint=DAMAGED_HINT) from None


def _load(path: str) -> ModelFile:
    members = read_arrays(path)
    header = _json_member(members, "__netlang__")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DamagedModel("__netlang__", "not a netlang model file")
    version = header.get("version")
    if type(version) is not int:
        raise DamagedModel("__netlang__", "it has no format version")
    if version > FORMAT_VERSION:
        raise DataError(f"model format version {version} is newer than this netlang understands "
                        f"({FORMAT_VERSION})", DataPosition(path), hint="upgrade netlang")
    network = graph_from_json(header.get("graph"))
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise DamagedModel("__netlang__", "'meta' is not a record")
    training = _json_member(members, "__training__") if "__training__" in members else None
    if training is not None and not isinstance(training, dict):
        raise DamagedModel("__training__", "not a record")
    params, state = {}, {}
    for key, array in members.items():
        if key.startswith("param/"):
            params[key[6:]] = array
        elif key.startswith("state/"):
            state[key[6:]] = array
        elif key not in ("__netlang__", "__training__"):
            raise DamagedModel(f"member '{key:.100}'", "netlang writes no such member")
    _check_parameters(network, params)
    return ModelFile(network, params, state, training, meta)


def _json_member(members: dict, key: str):
    array = members.get(key)
    if array is None:
        raise DamagedModel(key, "the member is missing")
    if array.dtype != np.uint8 or array.ndim != 1:
        raise DamagedModel(key, "not a JSON document")
    try:
        return json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DamagedModel(key, "not a JSON document") from None


def _check_parameters(network: Network, params: dict) -> None:
    """Every parameter node has its value, of its shape, and every value belongs to a parameter."""
    nodes = {n.name: n for n in network.parameters}
    for name, value in params.items():
        node = nodes.get(name)
        if node is None:
            raise DamagedModel(f"member 'param/{name:.100}'", "no parameter node has this name")
        if value.dtype.kind != "f" or value.shape != to_runtime(node.shape):
            raise DamagedModel(f"member 'param/{name}'", f"a {value.dtype} array of shape {value.shape} is not "
                                                          f"the value of a parameter of shape {node.shape}")
    missing = next((name for name in nodes if name not in params), None)
    if missing is not None:
        raise DamagedModel(f"parameter '{missing}'", "its value (member 'param/…') is missing")


# ---- the archive: a zip of .npy members, read without pickle -------------------------------------

_ARRAY_KINDS = "biuf"          # booleans, integers, floats: what netlang stores
# What NumPy's header reader (a tokenizer and literal_eval over the header text) raises on damage.
_HEADER_FAILURES = (ValueError, SyntaxError, TypeError, TokenError, RecursionError, MemoryError)


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """Every `.npy` member of the `.npz` archive at `path`, by name without `.npy`. Members must be
    stored uncompressed (as `np.savez` writes them), hold plain numbers, and be exactly as long as
    their headers say, so a crafted file can neither run code nor make us allocate more than its size."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            arrays = {}
            for info in archive.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if name in arrays or not info.filename.endswith(".npy"):
                    raise DamagedModel(f"member '{info.filename:.100}'", "not an array netlang writes")
                arrays[name] = _read_member(archive, info, size)
            return arrays
    except zipfile.BadZipFile as exc:
        raise DamagedModel("archive", _zip_problem(exc)) from None
    except (OSError, EOFError, ValueError, NotImplementedError, RuntimeError, OverflowError) as exc:
        # The zip module's and the npy reader's complaints about a damaged file (not their advice).
        raise DamagedModel("archive", f"cannot be read ({type(exc).__name__})") from None


def _zip_problem(exc: zipfile.BadZipFile) -> str:
    text = str(exc)
    if "CRC" in text:
        return "a member's checksum is wrong (the data changed after it was written)"
    return "not a zip archive, or a truncated one"


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, file_size: int) -> np.ndarray:
    part = f"member '{info.filename}'"
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > file_size:
        raise DamagedModel(part, "not stored the way netlang writes arrays")
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            reader = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                raise DamagedModel(part, f"unknown array format version {version}")
            shape, fortran_order, dtype = reader(member)
        except _HEADER_FAILURES:
            raise DamagedModel(part, "its array header is damaged") from None
        if dtype.hasobject or dtype.kind not in _ARRAY_KINDS or dtype.fields is not None:
            raise DamagedModel(part, f"holds {dtype} values; netlang stores only numbers (and never "
                                     "loads pickled objects)")
        count = math.prod(shape)
        if info.file_size != member.tell() + count * dtype.itemsize:
            raise DamagedModel(part, f"its size does not match its header (a {dtype} array of shape {shape})")
        array = np.empty(count, dtype=dtype)
        view = memoryview(array).cast("B")
        filled = 0
        while filled < len(view):
            got = member.readinto(view[filled:])
            if not got:
                raise DamagedModel(part, "the data ends early")
            filled += got
        member.read(1)   # reach the end, where the zip module checks the member's checksum
    return array.reshape(shape, order="F" if fortran_order else "C")
