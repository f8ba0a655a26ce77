"""`netlang graph cfg.net [--action A] [-o FILE]`: the network as a picture (CNTK's `plot` action).

The graph is written in Graphviz's DOT language: one box per node labelled with its config name,
op and shape (ellipses for inputs, small boxes for parameters), an edge from each input to the node
that reads it (dashed: the delayed edge of PastValue/FutureValue), and each recurrent loop drawn as
a cluster. `-o model.dot` writes the DOT text (the default is stdout); `-o model.svg`, `.png` or
`.pdf` asks Graphviz's `dot` program to render it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from netlang.actions.common import action_with_network
from netlang.compiler.graph import load_config
from netlang.compiler.graph.loops import find_loops
from netlang.compiler.graph.network import build_action_network
from netlang.errors import UsageError
from netlang.ir.graph import Network, is_input, layout_suffix
from netlang.ir.shapes import format_shape
from netlang.ops.registry import is_delay

RENDERED = ("svg", "png", "pdf")


def run(args) -> int:
    config = load_config(args.config, args.overrides)
    _, view = action_with_network(config, args.action)
    text = network_dot(build_action_network(view.network_expr()))
    if not args.output:
        sys.stdout.write(text)
        return 0
    extension = os.path.splitext(args.output)[1].lstrip(".").lower()
    if extension in RENDERED:
        render(text, args.output, extension)
    else:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0


def network_dot(network: Network) -> str:
    """The DOT text of `network`."""
    lines = ["digraph network {", "  rankdir=BT;", '  node [fontname="Helvetica", fontsize=10];']
    key = {node.id: f"n{index}" for index, node in enumerate(network.nodes)}   # the same text every run
    in_loop = set()
    for number, loop in enumerate(find_loops(network.nodes)):
        direction = "PastValue" if loop.direction > 0 else "FutureValue"
        lines.append(f"  subgraph cluster_loop{number} {{")
        lines.append(f'    label="recurrent loop ({direction})"; style=rounded; color=gray40;')
        lines += [f"    {_node_line(node, key)}" for node in loop.nodes]
        lines.append("  }")
        in_loop.update(n.id for n in loop.nodes)
    lines += [f"  {_node_line(node, key)}" for node in network.nodes if node.id not in in_loop]
    for node in network.nodes:
        for position, source in enumerate(node.inputs):
            style = " [style=dashed]" if is_delay(node) and position == 0 else ""
            lines.append(f"  {key[source.id]} -> {key[node.id]}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_line(node, key: dict) -> str:
    label = "\\n".join(_quoted(part) for part in (node.name or "<unnamed>", node.op,
                                                   format_shape(node.shape, layout_suffix(node.layout))))
    if node.is_parameter:
        style = 'shape=box, style="filled", fillcolor=gray92, fontsize=8'
    elif is_input(node):
        style = 'shape=ellipse, style="filled", fillcolor=lightblue'
    else:
        style = "shape=box"
    return f'{key[node.id]} [label="{label}", {style}];'


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render(text: str, path: str, fmt: str) -> None:
    dot = shutil.which("dot")
    if dot is None:
        raise UsageError(f"writing .{fmt} needs Graphviz's dot program, which is not installed",
                         hint="install Graphviz (apt-get install graphviz), or write the DOT text: -o model.dot")
    done = subprocess.run([dot, f"-T{fmt}", "-o", path], input=text.encode("utf-8"), capture_output=True)
    if done.returncode != 0:
        raise UsageError(f"dot could not render {path}: {done.stderr.decode(errors='replace').strip()}")
