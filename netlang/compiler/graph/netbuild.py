"""From an action's network member to a validated Network (reference §3.9).

The member may be a record (`network = { … }`, the `[`/`{` form: implicitly `new ComputationNetwork`)
or any expression that yields a network (the `(` form, e.g. a loaded model). The same record used by
several actions gives the same Network.
"""
from __future__ import annotations

from netlang.compiler.graph import nodes as builtins
from netlang.compiler.graph import modelload# noqa: F401  (install the node hooks and constructors)
from netlang.compiler.lang.nodes import BuildContext
from netlang.ir.graph import Network
from netlang.compiler.graph.network import build_network
from netlang.ir.shapes import format_shape
from netlang.ir.graph import layout_suffix
from netlang.errors import NetworkError

_built: dict[int, tuple[object, Network]] = {}


def network_from_value(value, span=None) -> Network:
    from netlang.compiler.lang import values

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
    """A network that is trained needs a criterion and at least one input."""
    if not network.groups.get("criterion"):
        raise NetworkError("the network has no criterion node", span or network.span,
                           hint="declare criterionNodes = (ce) (exact spelling) or give the loss tag='criterion'")
    if not network.inputs:
        raise NetworkError("the network has no inputs", span or network.span,
                           hint="declare inputs with Input {dims} and list them in featureNodes/labelNodes")


def summary(network: Network) -> dict:
    """What `netlang check` reports: each node's name, op, shape (BS notation) and parameter count."""
    nodes = []
    for n in network.nodes:
        nodes.append({"name": n.name, "op": n.op, "shape": format_shape(n.shape, layout_suffix(n.layout)),
                      "parameters": n.dim if n.is_parameter and n.learning_rate_multiplier > 0 else 0,
                      "tags": sorted(n.tags)})
    return {"parameters": network.parameter_count(), "nodes": nodes,
            "groups": {g: [n.name for n in ns] for g, ns in network.groups.items() if ns}}
