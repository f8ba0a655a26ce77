"""ONNX export: a network with its parameters as an ONNX model (opset 17) that onnxruntime runs.

What the exported model computes is what netlang's executor computes in inference mode (dropout off,
batch normalisation with its running statistics), on the same arrays:

* **Inputs and outputs** keep netlang's run-time layout: `[N, *reversed(BS shape)]` for batch values
  (an image `28:28:1` is `[N, 1, 28, 28]`, ONNX's NCHW), `[T, N, ...]` for sequences. A sparse input
  becomes a dense one (one-hot rows). The inputs are the network inputs the outputs need; the outputs
  are the network's output nodes, or the nodes named.
* **Sequences** are taken as full: every sequence of a minibatch has all T steps (ONNX has no
  masks). Recurrent loops (PastValue/FutureValue cycles: LSTMs, GRUs composed in the config) become
  ONNX `Scan` operators whose body is one time step of the loop; a delay outside a loop is a shift
  along the time axis.
* **Ops**: each op the exporter knows has a converter in `CONVERTERS` below, written against the
  op's run-time semantics (netlang/ops); any other op is an error naming the node, its op and the
  config line that made it.

`onnx` is an optional extra (`pip install 'netlang[onnx]'`), imported when an export runs.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from netlang.compiler.graph.loops import Loop, execution_units
from netlang.compiler.graph.plan import needed_nodes
from netlang.errors import NetworkError, UsageError
from netlang.ir.graph import Network, Node, SeqAxis, dyn_rank, is_input
from netlang.ir.shapes import num_elements, rm_axis, to_runtime
from netlang.ops.conv import geometry_for, is_transposed, weight_matrix
from netlang.ops.linalg import TIMES_SIGNATURE
from netlang.ops.normalization import BATCH_NORM_SIGNATURE, LAYER_NORM_SIGNATURE
from netlang.ops.pooling import POOL_SIGNATURE, pool_kind, pooling_geometry
from netlang.ops.registry import op_of
from netlang.ops.sequence import DELAY_SIGNATURE, time_step
from netlang.ops.shape_ops import SLICE_SIGNATURE, SPLICE_SIGNATURE, TRANSPOSE_SIGNATURE

OPSET = 17
INSTALL_HINT = "pip install 'netlang[onnx]' (onnx and onnxruntime)"


class ExportError(NetworkError):
    kind = "export error"


@dataclass
class Value:
    """A value of the ONNX graph: its name, leading dynamic axes and BS sample shape; `array` is
    its content when it is a constant (parameters), which converters may fold."""

    name: str
    dyn: int
    shape: tuple                  # BS sample shape
    array: np.ndarray | None = None

    @property
    def rm(self) -> tuple:
        return to_runtime(self.shape)

    @property
    def rank(self) -> int:
        return self.dyn + len(self.shape)


def export_onnx(network: Network, parameters: Mapping[str, np.ndarray], path: str,
                outputs: list[str] | None = None, state: Mapping[str, np.ndarray] | None = None,
                name: str = "netlang"):
    """Write `network` with `parameters` (run-time layout, by node name) as an ONNX model to `path`;
    returns the ModelProto. `state` holds node state such as batch-norm sample counts."""
    onnx = _onnx()
    output_nodes = _output_nodes(network, outputs)
    graph = GraphBuilder(onnx, name, parameters, state or {})
    nodes = needed_nodes(network, output_nodes)
    for unit in execution_units(nodes):
        if isinstance(unit, Loop):
            convert_loop(graph, unit, _read_after(unit, nodes, output_nodes))
        elif is_input(unit):
            graph.add_input(unit)
        elif unit.is_parameter:
            graph.add_parameter(unit)
        else:
            graph.values[unit.id] = convert(graph, unit)
    for node in output_nodes:
        graph.add_output(node)
    model = onnx.helper.make_model(graph.make_graph(), opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="netlang", doc_string=__doc__.split("\n\n")[0])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return model


def _read_after(loop: Loop, nodes: list[Node], outputs: list[Node]) -> list[Node]:
    """The loop's nodes that nodes after it read (or that are outputs): its Scan's outputs."""
    read = {i.id for n in nodes if n.id not in loop.ids for i in n.inputs} | {n.id for n in outputs}
    return [n for n in loop.nodes if n.id in read]


def _onnx():
    try:
        import onnx
    except ImportError:
        raise UsageError("ONNX export needs the onnx package, which is not installed", hint=INSTALL_HINT) from None
    return onnx


def _output_nodes(network: Network, names: list[str] | None) -> list[Node]:
    if not names:
        nodes = list(network.groups.get("output") or [])
        if not nodes:
            raise UsageError("the network has no output nodes to export", hint="name them with --outputs z")
        return nodes
    nodes = []
    for name in names:
        node = network.node(name)
        if node is None:
            raise UsageError(f"no node named '{name}' to export")
        nodes.append(node)
    return nodes


# ---- building the graph ------------------------------------------------------------------------------

_counter = itertools.count()


class GraphBuilder:
    """Nodes, initializers, inputs and outputs of one ONNX graph (the model's, or a Scan body)."""

    def __init__(self, onnx, name: str, parameters: Mapping, state: Mapping, outer: "GraphBuilder | None" = None):
        self.onnx = onnx
        self.name = name
        self.parameters = parameters
        self.state = state
        self.outer = outer
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self.outputs: list = []
        self.values: dict[int, Value] = {}       # IR node id -> its value in this graph

    def fresh(self, hint: str) -> str:
        return f"{hint}__{next(_counter)}"

    def value_of(self, node: Node) -> Value:
        scope = self
        while scope is not None:
            if node.id in scope.values:
                return scope.values[node.id]
            scope = scope.outer
        raise KeyError(node.name)

    # -- values
    def op(self, op_type: str, inputs: list[str], hint: str = "v", outputs: int = 1, **attrs):
        names = [self.fresh(hint) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if outputs == 1 else names

    def const(self, array, hint: str = "c") -> str:
        array = np.asarray(array)
        array = array.astype(np.int64 if array.dtype.kind in "iub" else np.float32)
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), "ints")

    # -- leaves, outputs
    def add_input(self, node: Node) -> None:
        dims = (["T", "N"] if dyn_rank(node.layout) == 2 else ["N"]) + list(to_runtime(node.shape))
        self.inputs.append(self.onnx.helper.make_tensor_value_info(node.name, self.onnx.TensorProto.FLOAT, dims))
        self.values[node.id] = Value(node.name, dyn_rank(node.layout), node.shape)

    def add_parameter(self, node: Node) -> None:
        array = np.asarray(self.parameters[node.name], dtype=np.float32).reshape(to_runtime(node.shape))
        self.initializers.append(self.onnx.numpy_helper.from_array(array, node.name))
        self.values[node.id] = Value(node.name, 0, node.shape, array)

    def add_output(self, node: Node) -> None:
        value = self.value_of(node)
        dims = (["T", "N"] if value.dyn == 2 else ["N"] if value.dyn == 1 else []) + list(value.rm)
        self.nodes.append(self.onnx.helper.make_node("Identity", [value.name], [node.name]))
        self.outputs.append(self.onnx.helper.make_tensor_value_info(node.name, self.onnx.TensorProto.FLOAT, dims))

    def make_graph(self):
        # Parameters that only converters' folded copies use (a reshaped weight) stay out of the file.
        used = _names_read(self.nodes)
        initializers = [i for i in self.initializers if i.name in used]
        return self.onnx.helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, initializers)


def _names_read(nodes) -> set:
    """Every value name the nodes read, in their subgraphs (Scan bodies) too."""
    names = set()
    for node in nodes:
        names.update(node.input)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                names |= _names_read(attribute.g.node)
    return names


def convert(graph: GraphBuilder, node: Node, dyn: int | None = None) -> Value:
    """The value of `node` from its inputs' values, by the converter of its op."""
    op = op_of(node)
    converter = CONVERTERS.get(op.name)
    if converter is None:
        raise ExportError(f"cannot export node '{node.name}': ONNX export does not handle op {op.name} yet",
                          node.span, hint=f"exportable ops: {', '.join(sorted(CONVERTERS))}")
    xs = [graph.value_of(i) for i in node.inputs]
    out = Value("", dyn_rank(node.layout) if dyn is None else dyn, tuple(node.shape))
    out.name = converter(graph, node, xs, out)
    return out


def _unsupported(node: Node, why: str) -> ExportError:
    return ExportError(f"cannot export node '{node.name}' ({node.op}) to ONNX: {why}", node.span)


# ---- alignment (BrainScript broadcasting on run-time arrays) ----------------------------------------

def aligned(graph: GraphBuilder, x: Value, dyn: int, rank: int) -> str:
    """`x` laid out like a value with `dyn` dynamic axes and `rank` sample axes: size-1 axes inserted
    between its dynamic axes and its sample axes (a static value broadcasts as NumPy does)."""
    pad = rank - len(x.shape)
    if x.dyn == 0:
        return x.name
    axes = [0] if (x.dyn, dyn) == (1, 2) else []
    axes += list(range(dyn, dyn + pad))
    if not axes:
        return x.name
    return graph.op("Unsqueeze", [x.name, graph.ints(axes)], "aligned")


def _elementwise(onnx_op: str, cast: bool = False, negate: bool = False):
    def convert_op(graph, node, xs, out):
        names = [aligned(graph, x, out.dyn, len(out.shape)) for x in xs]
        y = graph.op(onnx_op, names, node.op)
        if negate:
            y = graph.op("Not", [y], node.op)
        return graph.op("Cast", [y], node.op, to=graph.onnx.TensorProto.FLOAT) if cast else y
    return convert_op


def _unary(onnx_op: str, **attrs):
    def convert_op(graph, node, xs, out):
        return graph.op(onnx_op, [xs[0].name], node.op, **attrs)
    return convert_op


def _square(graph, node, xs, out):
    return graph.op("Mul", [xs[0].name, xs[0].name], "square")


def _clip(graph, node, xs, out):
    low, high, x = (aligned(graph, v, out.dyn, len(out.shape)) for v in xs)
    return graph.op("Min", [graph.op("Max", [x, low], "clip"), high], "clip")


# ---- products ------------------------------------------------------------------------------------

def _times(transpose: bool):
    def convert_op(graph, node, xs, out):
        a, b = xs
        rank = 1 if transpose else int(TIMES_SIGNATURE.value(node.attrs, "outputRank"))
        a_rm = _static(node, a, "its first operand must be a parameter or constant")
        if transpose:
            a_rm = a_rm.reshape(1, -1) if a_rm.ndim == 1 else a_rm.T
        num_reduce = a_rm.ndim - rank
        k = num_elements(a_rm.shape[:num_reduce])
        b_reduce = num_reduce
        if rank == 1 and a_rm.ndim == 2 and b.rm and b.rm[-1] != k:
            b_reduce = _trailing_axes(node, b.rm, k)
        kept = list(b.rm[:len(b.rm) - b_reduce])
        flat = graph.op("Reshape", [b.name, graph.ints([0] * b.dyn + kept + [k])], "flat") if b_reduce != 1 else b.name
        product = graph.op("MatMul", [flat, graph.const(a_rm.reshape(k, -1), "weight")], "times")
        out_rm = list(a_rm.shape[num_reduce:])
        if len(out_rm) == 1:
            return product
        return graph.op("Reshape", [product, graph.ints([0] * b.dyn + kept + out_rm)], "times")
    return convert_op


def _trailing_axes(node: Node, rm: tuple, k: int) -> int:
    product = 1
    for n, d in enumerate(reversed(rm), start=1):
        product *= d
        if product == k:
            return n
    raise _unsupported(node, f"no trailing axes of {rm} hold the {k} columns of the first operand")


def _static(node: Node, value: Value, why: str) -> np.ndarray:
    if value.array is None:
        raise _unsupported(node, why)
    return value.array


# ---- convolution and pooling -----------------------------------------------------------------------

def _window_attrs(node: Node, axes) -> dict:
    """kernel_shape, strides, pads, dilations of the spatial axes (run-time order) of a geometry."""
    if any(a.lower < 0 for a in axes):
        raise _unsupported(node, "a window starts before the input (cropping)")
    return {"kernel_shape": [a.kernel for a in axes], "strides": [a.stride for a in axes],
            "pads": [a.lower for a in axes] + [max(a.upper, 0) for a in axes],
            "dilations": [a.dilation for a in axes]}


def _batch_images(node: Node, x: Value) -> None:
    if x.dyn != 1:
        raise _unsupported(node, "only a batch of samples (no sequence axis) is exported")


def _convolution(graph, node, xs, out):
    w, x = xs
    _batch_images(node, x)
    transposed = op_of(node).name == "ConvolutionTranspose" or is_transposed(node.attrs)
    geo = geometry_for(x.shape, w.shape, node.attrs, transposed)
    spatial = geo.rm_axes[1:]
    channel = geo.rm_axes[0]
    if channel.kernel != channel.size or len(geo.axes) < 2:
        raise _unsupported(node, "the kernel must span the channel axis (the last axis of W:H:C)")
    kernel = (geo.maps, channel.size) + tuple(a.kernel for a in spatial)
    weight = weight_matrix(_static(node, w, "its weight must be a parameter"), geo, node.op).reshape(kernel)
    attrs = _window_attrs(node, spatial)
    if not transposed:
        return graph.op("Conv", [x.name, graph.const(weight, "kernel")], "conv", **attrs)
    attrs["output_padding"] = [max(-a.upper, 0) for a in spatial]
    return graph.op("ConvTranspose", [x.name, graph.const(weight, "kernel")], "deconv", **attrs)


def _pooling(graph, node, xs, out):
    x = xs[0]
    _batch_images(node, x)
    geo = pooling_geometry(x.shape, node.attrs)
    axes = geo.rm_axes
    first = axes[0]
    has_channel = first.kernel == 1 and first.stride == 1 and first.trivial_padding and len(axes) > 1
    spatial = axes[1:] if has_channel else axes
    attrs = _window_attrs(node, spatial)
    attrs.pop("dilations")
    source = x.name if has_channel else graph.op("Unsqueeze", [x.name, graph.ints([1])], "channel")
    if pool_kind(node.attrs) == "max":
        pooled = graph.op("MaxPool", [source], "maxpool", **attrs)
    else:
        include = bool(POOL_SIGNATURE.value(node.attrs, "includePad"))
        if include and any(a.lower != a.declared_lower or a.upper != a.declared_upper for a in spatial):
            raise _unsupported(node, "includePad with windows past the declared padding")
        pooled = graph.op("AveragePool", [source], "avgpool", count_include_pad=int(include), **attrs)
    return pooled if has_channel else graph.op("Squeeze", [pooled, graph.ints([1])], "pooled")


# ---- normalisation -----------------------------------------------------------------------------------

def _batch_normalization(graph, node, xs, out):
    x, scale, bias, mean, variance = xs[:5]
    seen = _static(node, xs[5], "runCount must be a parameter").sum() if len(xs) > 5 else \
        float(np.asarray(graph.state.get(f"node/{node.name}/samples_seen", 0)).sum())
    if seen <= 0:
        raise _unsupported(node, "its running statistics are empty (runCount 0): netlang would normalise "
                                 "with each minibatch's own statistics; train the model first")
    spatial = bool(BATCH_NORM_SIGNATURE.value(node.attrs, "spatial"))
    epsilon = float(BATCH_NORM_SIGNATURE.value(node.attrs, "epsilon"))
    arrays = [_static(node, v, "its scale, bias and statistics must be parameters").reshape(-1).astype(np.float64)
              for v in (scale, bias, mean, variance)]
    factor = arrays[0] / np.sqrt(arrays[3] + epsilon)
    shift = arrays[1] - arrays[2] * factor
    shape = (-1,) + (1,) * (len(x.shape) - 1) if spatial else x.rm
    scaled = graph.op("Mul", [x.name, graph.const(factor.reshape(shape), "bn_scale")], "bn")
    return graph.op("Add", [scaled, graph.const(shift.reshape(shape), "bn_shift")], "bn")


def _layer_normalization(graph, node, xs, out):
    x = xs[0]
    axes = list(range(x.dyn, x.rank))
    epsilon = float(LAYER_NORM_SIGNATURE.value(node.attrs, "epsilon"))
    mean = graph.op("ReduceMean", [x.name], "ln_mean", axes=axes, keepdims=1)
    centred = graph.op("Sub", [x.name, mean], "ln_centred")
    variance = graph.op("ReduceMean", [graph.op("Mul", [centred, centred], "ln_sq")], "ln_var", axes=axes, keepdims=1)
    std = graph.op("Sqrt", [graph.op("Add", [variance, graph.const(np.float32(epsilon))], "ln_var")], "ln_std")
    y = graph.op("Div", [centred, std], "ln")
    for v, onnx_op in zip(xs[1:], ("Mul", "Add")):
        y = graph.op(onnx_op, [y, aligned(graph, v, out.dyn, len(out.shape))], "ln")
    return y


# ---- softmax and shapes ------------------------------------------------------------------------------

def _per_sample(onnx_op: str):
    """Softmax, LogSoftmax, Hardmax over all elements of each sample."""
    def convert_op(graph, node, xs, out):
        x = xs[0]
        flat = graph.op("Reshape", [x.name, graph.ints([0] * x.dyn + [-1])], "flat")
        y = graph.op(onnx_op, [flat], node.op, axis=-1)
        return graph.op("Reshape", [y, graph.ints([0] * x.dyn + list(x.rm))], node.op)
    return convert_op


def _reshape(graph, node, xs, out):
    return graph.op("Reshape", [xs[0].name, graph.ints([0] * xs[0].dyn + list(out.rm))], "reshape")


def _slice(graph, node, xs, out):
    x = xs[0]
    axis = int(SLICE_SIGNATURE.value(node.attrs, "axis"))
    dim = x.shape[axis - 1]
    begin, end = (int(SLICE_SIGNATURE.value(node.attrs, k)) for k in ("beginIndex", "endIndex"))
    begin, end = begin + dim if begin < 0 else begin, end + dim if end <= 0 else end
    return graph.op("Slice", [x.name, graph.ints([begin]), graph.ints([end]), graph.ints([rm_axis(axis, x.rank)])],
                    "slice")


def _splice(graph, node, xs, out):
    axis = int(SPLICE_SIGNATURE.value(node.attrs, "axis"))
    rank = len(out.shape)
    for x in xs:
        padded = tuple(x.shape) + (1,) * (rank - len(x.shape))
        if any(d != o for k, (d, o) in enumerate(zip(padded, out.shape)) if k != axis - 1):
            raise _unsupported(node, "its operands differ outside the splice axis (broadcasting)")
        if x.dyn == 0 and out.dyn:
            raise _unsupported(node, "a static operand next to values per sample")
    names = [aligned(graph, x, out.dyn, rank) for x in xs]
    return graph.op("Concat", names, "splice", axis=rm_axis(axis, out.dyn + rank))


def _transpose(graph, node, xs, out):
    x = xs[0]
    perm = list(range(x.rank))
    first, second = (rm_axis(int(TRANSPOSE_SIGNATURE.value(node.attrs, k)), x.rank) for k in ("axis1", "axis2"))
    perm[first], perm[second] = perm[second], perm[first]
    return graph.op("Transpose", [x.name], "transpose", perm=perm)


# ---- the time axis -----------------------------------------------------------------------------------

def _sequence_end(index: int):
    def convert_op(graph, node, xs, out):
        x = xs[0]
        if x.dyn < 2:
            return graph.op("Identity", [x.name], node.op)
        return graph.op("Gather", [x.name, graph.const(np.int64(index))], node.op, axis=0)
    return convert_op


def _initial_state(graph, node: Node, xs: list[Value], like: str, steps: int | None) -> str:
    """The delay's initial state for `steps` steps of `like` (a [T, N, ...] value), or for one step of
    it (steps None: [N, ...])."""
    shape = graph.op("Shape", [like], "shape")
    tail = graph.op("Slice", [shape, graph.ints([1]), graph.ints([2 if steps is None else 1 << 62])], "tail")
    if steps is None:
        tail = graph.op("Concat", [tail, graph.ints(to_runtime(node.shape))], "shape", axis=0)
    else:
        tail = graph.op("Concat", [graph.ints([steps]), tail], "shape", axis=0)
    zeros = graph.op("ConstantOfShape", [tail], "zeros",
                     value=graph.onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
    if len(xs) < 2:
        initial = graph.const(np.float32(DELAY_SIGNATURE.value(node.attrs, "defaultHiddenActivation")))
    else:
        initial = xs[1]
        if initial.dyn > 1:
            raise _unsupported(node, "an initial state that is a sequence")
        initial = aligned(graph, initial, 1 if steps is None else 2, len(node.shape))
    return graph.op("Add", [zeros, initial], "initial")


def _delay(graph, node, xs, out):
    """A PastValue/FutureValue outside a recurrent loop: the sequence shifted along the time axis."""
    x = xs[0]
    if x.dyn != 2:
        raise _unsupported(node, "a delay of a value that is not a sequence")
    k = time_step(node.attrs)
    block = _initial_state(graph, node, xs, x.name, k)
    if op_of(node).delay > 0:
        kept = graph.op("Slice", [x.name, graph.ints([0]), graph.ints([-k]), graph.ints([0])], "past")
        return graph.op("Concat", [block, kept], "past", axis=0)
    kept = graph.op("Slice", [x.name, graph.ints([k]), graph.ints([1 << 62]), graph.ints([0])], "future")
    return graph.op("Concat", [kept, block], "future", axis=0)


def convert_loop(graph: GraphBuilder, loop: Loop, exported: list[Node]) -> None:
    """A recurrent loop as a Scan over the time axis: the body is one step of the loop's nodes, the
    state variables are the values its delays carry from one step to the next."""
    delays = loop.delays
    for delay in delays:
        if time_step(delay.attrs) != 1:
            raise _unsupported(delay, "a delay of more than one step inside a recurrent loop")
    externals = loop.external_inputs()
    stepped = [e for e in externals if isinstance(e.layout, SeqAxis)]
    if not stepped:
        raise _unsupported(loop.nodes[0], "a recurrent loop that reads no sequence")
    first_sequence = graph.value_of(stepped[0]).name
    # A delay's main input is computed in the loop; its initial state (second input), if any, before it.
    initial = [_initial_state(graph, d, [None] + [graph.value_of(i) for i in d.inputs[1:]], first_sequence, None)
               for d in delays]
    body = GraphBuilder(graph.onnx, graph.fresh("step"), graph.parameters, graph.state, outer=graph)
    onnx = graph.onnx
    for delay in delays:
        name = body.fresh(f"{delay.name}_state")
        body.inputs.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        body.values[delay.id] = Value(name, 1, delay.shape)
    for external in stepped:
        name = body.fresh(f"{external.name}_t")
        body.inputs.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        body.values[external.id] = Value(name, 1, external.shape)
    for node in loop.nodes:
        if node.id not in body.values:
            body.values[node.id] = convert(body, node, dyn=min(dyn_rank(node.layout), 1))
    results = [body.value_of(d.inputs[0]).name for d in delays] + [body.value_of(n).name for n in exported]
    for result in results:
        copy = body.fresh("out")
        body.nodes.append(onnx.helper.make_node("Identity", [result], [copy]))
        body.outputs.append(onnx.helper.make_tensor_value_info(copy, onnx.TensorProto.FLOAT, None))
    backward = int(loop.direction < 0)
    outputs = graph.op("Scan", initial + [graph.value_of(e).name for e in stepped], "scan",
                       outputs=len(results), body=body.make_graph(), num_scan_inputs=len(stepped),
                       scan_input_directions=[backward] * len(stepped),
                       scan_output_directions=[backward] * len(exported))
    outputs = [outputs] if isinstance(outputs, str) else outputs
    for node, name in zip(exported, outputs[len(delays):]):
        graph.values[node.id] = Value(name, dyn_rank(node.layout), node.shape)


# ---- the converters of the ops ------------------------------------------------------------------------

CONVERTERS: dict[str, Callable] = {
    "Plus": _elementwise("Add"), "Minus": _elementwise("Sub"), "ElementTimes": _elementwise("Mul"),
    "ElementDivide": _elementwise("Div"),
    "Equal": _elementwise("Equal", cast=True), "NotEqual": _elementwise("Equal", cast=True, negate=True),
    "Less": _elementwise("Less", cast=True), "LessEqual": _elementwise("LessOrEqual", cast=True),
    "Greater": _elementwise("Greater", cast=True), "GreaterEqual": _elementwise("GreaterOrEqual", cast=True),
    "Negate": _unary("Neg"), "Reciprocal": _unary("Reciprocal"), "Abs": _unary("Abs"), "Exp": _unary("Exp"),
    "Log": _unary("Log"), "Sqrt": _unary("Sqrt"), "Sin": _unary("Sin"), "Cos": _unary("Cos"),
    "Sigmoid": _unary("Sigmoid"), "Tanh": _unary("Tanh"), "ReLU": _unary("Relu"), "ELU": _unary("Elu", alpha=1.0),
    "Softplus": _unary("Softplus"), "Floor": _unary("Floor"), "Ceil": _unary("Ceil"), "Round": _unary("Round"),
    "Square": _square, "Clip": _clip,
    "Dropout": _unary("Identity"), "Pass": _unary("Identity"), "StopGradient": _unary("Identity"),
    "Times": _times(False), "TransposeTimes": _times(True), "SparseTimes": _times(False),
    "SparseTransposeTimes": _times(True),
    "Convolution": _convolution, "ConvolutionTranspose": _convolution, "Pooling": _pooling,
    "BatchNormalization": _batch_normalization, "LayerNormalization": _layer_normalization,
    "Softmax": _per_sample("Softmax"), "LogSoftmax": _per_sample("LogSoftmax"), "Hardmax": _per_sample("Hardmax"),
    "Reshape": _reshape, "Slice": _slice, "Splice": _splice, "TransposeDimensions": _transpose,
    "PastValue": _delay, "FutureValue": _delay,
    "SequenceFirst": _sequence_end(0), "SequenceLast": _sequence_end(-1),
}
