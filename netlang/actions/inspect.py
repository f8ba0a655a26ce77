"""`netlang inspect MODELFILE`: the nodes of a trained model, to find what to load, clone or freeze.

Per node: its name, the member that reaches it from `BS.Network.Load` (`m.conv1_W` for
`conv1.W`), its op, its shape, and for parameters their element count, marked frozen when their
learningRateMultiplier is 0. `--json` prints the same as one document, with each node's inputs.
"""
from __future__ import annotations

import json
import sys

from rich.markup import escape
from rich.table import Table

from netlang.actions.output import stdout_console
from netlang.compiler.graph.reuse import member_name
from netlang.ir.graph import layout_suffix
from netlang.ir.modelfile import load_model
from netlang.ir.shapes import format_shape


def describe_model(path: str) -> dict:
    network = load_model(path).network
    nodes = []
    for node in network.nodes:
        nodes.append({"name": node.name, "member": member_name(node.name), "op": node.op,
                      "shape": format_shape(node.shape, layout_suffix(node.layout)),
                      "inputs": [i.name for i in node.inputs],
                      "parameters": node.dim if node.is_parameter else 0,
                      "frozen": node.is_parameter and node.learning_rate_multiplier == 0,
                      "tags": sorted(node.tags)})
    return {"model": path, "nodes": nodes,
            "parameters": network.parameter_count(), "frozen": network.parameter_count(False) - network.parameter_count(),
            "groups": {g: [n.name for n in ns] for g, ns in network.groups.items() if ns}}


def run(args) -> int:
    document = describe_model(args.model)
    if args.json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    console = stdout_console(args)
    table = Table(title=f"model {document['model']}", title_justify="left", show_edge=False)
    for column in ("node", "member", "op", "shape", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left", overflow="fold")
    for node in document["nodes"]:
        count = f"{node['parameters']:,}" + (" frozen" if node["frozen"] else "") if node["parameters"] else ""
        table.add_row(escape(node["name"]), escape(node["member"]) if node["member"] != node["name"] else "",
                      node["op"], node["shape"], count)
    console.print(table)
    groups = "; ".join(f"{g}: {', '.join(names)}" for g, names in document["groups"].items())
    console.print(f"{document['parameters']:,} learnable and {document['frozen']:,} frozen parameters in "
                  f"{len(document['nodes'])} nodes; {groups}", markup=False)
    return 0
