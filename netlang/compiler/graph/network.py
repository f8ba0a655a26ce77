"""`new ComputationNetwork R`: collect roots and special nodes, order, name, validate (reference §3.7).

1. Members named `featureNodes labelNodes criterionNodes evaluationNodes outputNodes` (exact,
   case-sensitive) are flattened; their nodes get that tag and become roots.
2. Every other member whose value is a node is a root too.
3. Everything reachable is added; late-attached delay inputs are resolved.
4. Tags from `tag=` and from step 1; node names are the expression paths, made unique.
5. Shapes are validated; without recurrence the network runs in frame mode (sequence → batch).
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from netlang.compiler.graph import loops, modelcheck, shapeinfer
from netlang.compiler.lang import values
from netlang.compiler.lang.nodes import BuildContext
from netlang.errors import DataError, EvalError, NetlangError, NetworkError
from netlang.ir.graph import BATCH, TAG_GROUPS, CycleError, Network, Node, SeqAxis, depth_first, layout_suffix
from netlang.ir.shapes import format_shape
from netlang.ops import registry
from netlang.ops.registry import is_delay, op_of

GROUP_MEMBERS = {f"{g}Nodes": g for g in TAG_GROUPS}


def build_network(record, ctx: BuildContext) -> Network:
    if isinstance(record, Network):
        return record
    if not isinstance(record, values.Record):
        raise NetworkError("a network must be described by a record { … }", ctx.span)
    roots: list[Node] = []
    groups: dict[str, list[Node]] = {g: [] for g in TAG_GROUPS}
    for name in record.names():
        try:
            value = record.get(name)
        except NetlangError as err:
            err.add_frame(f"network member '{name}'", record.span_of(name))
            raise
        if name in GROUP_MEMBERS:
            group = GROUP_MEMBERS[name]
            for item in _flatten_nodes(value, name, record):
                item.tags.add(group)
                if group == "label":
                    item.tags.discard("feature")
                if item not in groups[group]:
                    groups[group].append(item)
                roots.append(item)
        elif isinstance(value, Node):
            roots.append(value)
    return finish_network(roots, groups, ctx.span, record, getattr(record, "path", ""))


def finish_network(roots: list[Node], groups: dict[str, list[Node]], span, record=None, prefix: str = "") -> Network:
    """Steps 3 to 5 for the nodes reachable from `roots`: order, tag, name (relative to `prefix`),
    validate. Also the last step of BS.Network.Edit (compiler/graph/reuse.py)."""
    attach_late_inputs(roots)
    try:
        nodes = topological_order(roots)
    except CycleError as exc:
        raise NetworkError(f"cycle without PastValue/FutureValue: {exc}", exc.node.span,
                           hint="a recurrent loop must pass through PastValue or FutureValue") from None
    for node in nodes:
        for tag in node.tags:
            if tag in groups and node not in groups[tag] and not (tag == "feature" and "label" in node.tags):
                groups[tag].append(node)
    _strip_prefix(nodes, prefix)
    _make_names_unique(nodes)
    _guess_delay_shapes(nodes)
    shapeinfer.validate(nodes)
    _check_reduced_axes(nodes)
    _check_delays(nodes)
    loops.find_loops(nodes)           # every cycle passes a delay, no loop mixes directions
    _use_sparse_products(nodes)
    if not _needs_time_axis(nodes):
        _lower_to_frame_mode(nodes)
    return Network(nodes=nodes, groups=groups, span=span, record=record)


def _flatten_nodes(value, member: str, record) -> list[Node]:
    if isinstance(value, Node):
        return [value]
    if isinstance(value, values.Array):
        out = []
        for item in value.items():
            out.extend(_flatten_nodes(item, member, record))
        return out
    if value is values.NONE:
        return []
    raise NetworkError(f"'{member}' must be a node or an array of nodes", record.span_of(member),
                       hint="a function's result record must be selected with .member, e.g. (out.z)")


def attach_late_inputs(roots: list[Node]) -> None:
    """Force the inputs of every reachable delay. The walk enters the last root and the last input
    first (the order this pass has always had): the thunks it forces create nodes, and their ids
    order the steps within a loop."""
    def attached_inputs(node: Node) -> list[Node]:
        if node.late_inputs is not None:
            attach, node.late_inputs = node.late_inputs, None
            node.inputs = list(attach()) + node.inputs
        return node.inputs[::-1]

    depth_first(roots[::-1], attached_inputs)


def topological_order(roots: list[Node]) -> list[Node]:
    """Nodes reachable from `roots`, every node after its inputs. A cycle through a delay is broken
    at the delay: its main input (which closes the loop) is ordered as a root of its own; any other
    cycle raises CycleError."""
    return depth_first(roots, lambda node: node.inputs[1:] if is_delay(node) else node.inputs, acyclic=True,
                       deferred_of=lambda node: node.inputs[:1] if is_delay(node) else [])


def _strip_prefix(nodes: list[Node], prefix: str) -> None:
    """Name nodes relative to the network record, as CNTK does (`ce`, not `train.network.ce`)."""
    if not prefix:
        return
    prefix += "."
    for node in nodes:
        if node.name.startswith(prefix):
            node.name = node.name[len(prefix):]


def _make_names_unique(nodes: list[Node]) -> None:
    used: dict[str, int] = {}
    for node in nodes:
        base = node.name or node.op
        if base not in used:
            used[base] = 0
            node.name = base
            continue
        used[base] += 1
        candidate = f"{base}_{used[base]}"
        while candidate in used:
            used[base] += 1
            candidate = f"{base}_{used[base]}"
        used[candidate] = 0
        node.name = candidate


def _guess_delay_shapes(nodes: list[Node]) -> None:
    """A delay declared with dims 0 in a loop (`Previous(h)` with h computed from it) has no shape
    until its input has one, and the input needs the delay's. Guess the delay's shape from its input,
    leaving out the loop's own unknowns where broadcasting allows (elementwise ops); validation then
    checks the guess like any other shape."""
    for node in nodes:
        if is_delay(node) and node.inputs and not node.shape_known():
            guess = _shape_guess(node.inputs[0], {node.id})
            if guess:
                node.shape = guess


def _shape_guess(node: Node, visiting: set[int]) -> tuple | None:
    if node.shape_known():
        return node.shape
    if node.id in visiting:
        return None
    visiting.add(node.id)
    shapes = [_shape_guess(i, visiting) for i in node.inputs]
    visiting.discard(node.id)
    op = registry.get(node.op)
    if op is not None and op.delay:
        return shapes[0]
    if op is None or op.leaf:
        return node.shape if node.is_parameter else None    # a parameter's 0s are the rule's to infer
    if op.elementwise:
        shapes = [s for s in shapes if s]
    if not shapes or any(s is None for s in shapes):
        return None
    try:
        result = op.shape(shapes, node.attrs)
    except registry.ShapeMismatch:
        return None
    out = tuple(getattr(result, "out", result))
    return out if out and all(d > 0 for d in out) else None


def _needs_time_axis(nodes: list[Node]) -> bool:
    """Sequence operations need the time axis; so do inputs on different dynamic axes. Without
    either, a network runs in frame mode."""
    if any(op_of(n).needs_time_axis for n in nodes):
        return True
    # An input of a loaded model that ran in frame mode (BATCH) has no sequence axis of its own.
    return len({n.layout for n in nodes if op_of(n).leaf in ("input", "sparse_input") and n.layout is not BATCH}) > 1


def _check_reduced_axes(nodes: list[Node]) -> None:
    """Criteria combine their operands sample by sample: their dynamic axes must agree too (the
    common layout rule, which other ops apply for their output, names both operands)."""
    for node in nodes:
        op = registry.get(node.op)
        if op is not None and op.layout == "none" and len(node.inputs) > 1:
            shapeinfer.common_layout(node)


def _check_delays(nodes: list[Node]) -> None:
    for node in nodes:
        if is_delay(node) and not isinstance(node.layout, SeqAxis):
            what = "a static value" if node.layout is None else "one value per sequence"
            raise NetworkError(f"{node.op} '{node.name}' delays {what} ('{node.inputs[0].name}'), which has no "
                               "time steps", node.span,
                               hint="PastValue/FutureValue apply to sequences, e.g. an Input with a dynamic axis")


def _use_sparse_products(nodes: list[Node]) -> None:
    """A product whose second operand is a sparse input runs as its sparse form (a gather,
    ops/sparse.py), not as a dense product with a mostly-zero matrix."""
    for node in nodes:
        sparse_form = op_of(node).sparse_form
        if sparse_form and op_of(node.inputs[1]).leaf == "sparse_input" and node.inputs[0].layout is None:
            node.op = sparse_form


def _lower_to_frame_mode(nodes: list[Node]) -> None:
    for node in nodes:
        if isinstance(node.layout, SeqAxis):
            node.layout = BATCH


# ---- a network value, as an action uses it ---------------------------------------------------------

_built: dict[int, tuple[object, Network]] = {}


def network_from_value(value, span=None) -> Network:
    if isinstance(value, Network):
        return value
    if isinstance(value, values.Record):
        cached = _built.get(id(value))
        if cached is not None and cached[0] is value:
            return cached[1]
        network = build_network(value, BuildContext("", span))
        _built[id(value)] = (value, network)
        return network
    raise NetworkError(f"a network must be a record {{ … }} or an expression giving a network, "
                       f"got a {values.type_name(value)}", span)


def build_action_network(ref) -> Network:
    """`ref` is the schema's NetworkRef (record + member name + span)."""
    return network_from_value(ref.evaluate(), ref.span)


def require_training_nodes(network: Network, span=None) -> None:
    """A network that is trained needs a criterion, one number per sample, and at least one input."""
    if not network.groups.get("criterion"):
        raise NetworkError("the network has no criterion node", span or network.span,
                           hint="declare criterionNodes = (ce) (exact spelling) or give the loss tag='criterion'")
    for node in network.groups["criterion"]:
        require_scalar_criterion(node)
    if not network.inputs:
        raise NetworkError("the network has no inputs", span or network.span,
                           hint="declare inputs with Input {dims} and list them in featureNodes/labelNodes")


def require_scalar_criterion(node: Node) -> None:
    """A criterion is summed over the samples and minimised: it must be one number per sample."""
    if node.dim != 1:
        raise NetworkError(f"the criterion '{node.name}' is not one number per sample: its value is "
                           f"{format_shape(node.shape, layout_suffix(node.layout))}", node.span,
                           hint="a criterion is a loss such as CrossEntropyWithSoftmax (labels, z) or "
                                "SquareError (labels, z); ReduceSum makes one number of a vector")


def summary(network: Network) -> dict:
    """What `netlang check` reports: each node's name, op, shape (BS notation) and parameter count;
    the total counts what the criterion trains, as CNTK does, and learnable parameters nothing of the
    criterion uses are listed apart."""
    nodes = []
    unused = {p.id for p in network.unused_parameters}
    for n in network.nodes:
        nodes.append({"name": n.name, "op": n.op, "shape": format_shape(n.shape, layout_suffix(n.layout)),
                      "parameters": n.dim if n.is_parameter and n.learning_rate_multiplier > 0 else 0,
                      "tags": sorted(n.tags), **({"unused": True} if n.id in unused else {})})
    return {"parameters": network.parameter_count(), "nodes": nodes,
            "unused_parameters": {p.name: p.dim for p in network.unused_parameters},
            "groups": {g: [n.name for n in ns] for g, ns in network.groups.items() if ns}}


class ModelNotWrittenYet(NetworkError):
    """`BS.Network.Load` of a model file that an earlier command block writes: `netlang check` does not
    load it (the file there now, if any, is not the one the run will load)."""

    def __init__(self, path: str, writer: str, span):
        super().__init__(f"BS.Network.Load (\"{path}\") loads the model that block '{writer}' writes", span,
                         hint=f"it is loaded when the block runs, after '{writer}'")
        self.path = path
        self.writer = writer


# Model files that earlier command blocks write: normalised path -> the block that writes it.
_written_earlier: ContextVar[dict | None] = ContextVar("models_written_earlier", default=None)


@contextmanager
def models_written_earlier(paths: dict):
    """While building a network, treat these model files (path -> writing block) as not written yet."""
    token = _written_earlier.set({_normalised(p): block for p, block in paths.items()})
    try:
        yield
    finally:
        _written_earlier.reset(token)


def _normalised(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def _writer_of(path: str) -> str | None:
    """The earlier block that writes `path`: the model itself or one of its epoch files `<path>.<n>`."""
    written = _written_earlier.get()
    if not written:
        return None
    full = _normalised(path)
    epoch_file = re.fullmatch(r"(.*)\.\d+", full)
    return written.get(full) or (written.get(epoch_file.group(1)) if epoch_file else None)


def load_network(record, ctx: BuildContext):
    """`BS.Network.Load(pathName)` (`new ComputationNetworkFromFile [ pathName = … ]`, reference §4.6): a
    trained model file as a network value whose parameters start from the stored values, so
    `network = (BS.Network.Load("model.dnn"))` evaluates, tests or fine-tunes a trained model."""
    path = record.find("pathName")
    if not isinstance(path, str):
        raise EvalError("BS.Network.Load needs a file name (pathName)", ctx.span)
    writer = _writer_of(path)
    if writer is not None:
        raise ModelNotWrittenYet(path, writer, ctx.span)
    try:
        model = modelcheck.load_checked_model(path)
    except DataError as err:
        err.add_frame("BS.Network.Load", ctx.span)
        raise
    for node in model.network.parameters:
        if node.name in model.parameters:
            node.value = np.asarray(model.parameters[node.name], dtype=np.float64)
    model.network.span = ctx.span
    return model.network
