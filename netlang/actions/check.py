"""`netlang check cfg.net [key=value ...] [--json]`: validate a config without training.

Parses and evaluates the config, validates the top level and every block named by `command` with
the schemas, evaluates the user's plain variables, checks that the output directories can be made,
builds every network (with the memory a training of it needs), reads one minibatch from each
reader, and prints the resolved configuration (the values the config sets; `netlang explain` lists
the defaults too) and the networks.

A network that loads a model an earlier block of `command` writes (`BS.Network.Load ("$modelPath$")`
after a train block) is not built: check says which block writes it, and the block builds it when it
runs. A file of definitions only (a `Macros.bs` that configs include) has no command to run: check
evaluates its definitions and says so.
"""
from __future__ import annotations

import json
import sys

from rich.markup import escape

from netlang.actions.common import backend_for, create_reader
from netlang.actions.directories import output_directory, probe_directory
from netlang.actions.output import stdout_console
from netlang.actions.train import training_memory
from netlang.compiler.graph import load_config
from netlang.compiler.graph.network import (
    ModelNotWrittenYet,
    build_action_network,
    models_written_earlier,
    require_training_nodes,
    summary,
)
from netlang.compiler.lang.config import Config, block_entries, resolved_config_dict
from netlang.compiler.lang.evaluator import force_all
from netlang.compiler.lang.settings import reader_settings
from netlang.compiler.lang.views import own_names
from netlang.errors import ConfigError
from netlang.runtime.feeding import feeds_from_minibatch
from netlang.runtime.memory import device_memory, human_bytes, require_fit


def build_networks(config: Config) -> dict:
    """Build and validate the network of each action: name -> summary (nodes, shapes, parameters), or
    {"deferred": …} for a network that loads a model an earlier block writes.

    Actions without a network of their own (e.g. `test` reading `modelPath`) are skipped: check
    never needs data or model files to build networks.
    """
    networks = {}
    written: dict[str, str] = {}
    for name, view in config.actions():
        ref = view.network_expr()
        if ref is not None:
            networks[name] = _network_summary(view, ref, written)
        for path in _models_written(view):
            written.setdefault(path, name)
    return networks


def _network_summary(view, ref, written: dict) -> dict:
    with models_written_earlier(written):
        try:
            network = build_action_network(ref)
        except ModelNotWrittenYet as pending:
            return {"deferred": {"loads": pending.path, "written_by": pending.writer}}
    report = summary(network)
    if view.action == "train":
        require_training_nodes(network, ref.span)
        report["memory"] = check_memory(view, network, ref.span)
    return report


def _models_written(view) -> list[str]:
    """The model files a block writes: train its modelPath (and the epoch files), edit its outputModelPath."""
    if view.action == "train" and view.modelPath:
        return [view.modelPath]
    if view.action == "edit" and view.get("outputModelPath"):
        return [view.outputModelPath]
    return []


def check_memory(view, network, span) -> dict:
    """The training's memory estimate, with the device's memory when the device is here to ask;
    a config error when the training's buffers cannot fit it."""
    memory = training_memory(view, network)
    try:
        backend = backend_for(view)
    except ConfigError:              # a GPU that this machine does not have: nothing to compare with
        return {**memory.as_dict(), "device": str(view.deviceId), "deviceMemory": None}
    available = device_memory(backend)
    require_fit(memory, backend.device, available, span)
    return {**memory.as_dict(), "device": backend.device, "deviceMemory": available}


def check_readers(config: Config, networks: dict) -> dict:
    """Read one small minibatch from every reader of every action and feed it to the action's
    network inputs, so data errors (missing files, wrong dimensions, bad lines) show up now."""

    report = {}
    for name, view in config.actions():
        ref = view.network_expr()
        if ref is None or "deferred" in networks.get(name, {}):
            continue  # the model comes from a file written by training: nothing to feed yet
        network = build_action_network(ref)
        for key in ("reader", "cvReader"):
            reader = view.get(key)
            if reader is None:
                continue
            source = create_reader(reader_settings(reader), network, randomize=False, prefetch=False)
            try:
                minibatch = source.next_minibatch(16)
                feeds_from_minibatch(network, minibatch, "float32")
            finally:
                source.close()
            report[f"{name}.{key}"] = {"samples": int(minibatch.num_samples),
                                       "streams": sorted(minibatch.streams)}
    return report


# The file-path settings each action writes to, and so needs a directory for.
OUTPUT_PATHS = {"train": "modelPath", "write": "outputPath"}


def check_output_directories(config: Config) -> None:
    """Every directory training or writing will make can be made (probed, then removed again)."""
    for _, view in config.actions():
        key = OUTPUT_PATHS.get(view.action)
        path = view.get(key) if key is not None else None
        if path:
            probe_directory(output_directory(path), key, view.span_of(key))


def check_library(config: Config, args) -> int:
    """A file with definitions only: evaluate them all, say there is nothing to run (exit 0)."""
    names = own_names(config.record)
    for member in names:
        force_all(config.record.get(member))
    if args.json:
        sys.stdout.write(json.dumps({"library": True, "definitions": names}, indent=2) + "\n")
        return 0
    shown = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
    stdout_console(args).print(f"[bold green]ok[/bold green] {escape(config.path)}: {len(names)} definitions "
                               f"({escape(shown)}); no command to run — a library for configs to include")
    return 0


def run(args) -> int:
    config = load_config(args.config, args.overrides)
    if config.is_library():
        return check_library(config, args)
    resolved = resolved_config_dict(config)  # validates every command block
    check_output_directories(config)
    networks = build_networks(config)
    data = {} if args.no_data else check_readers(config, networks)
    if args.json:
        document = dict(resolved)
        actions = document.setdefault("actions", {})
        for name, net in networks.items():
            report = net if "deferred" in net else {"parameters": net["parameters"], "nodes": net["nodes"]}
            for key in ("memory", "unused_parameters"):
                if net.get(key):
                    report[key] = net[key]
            actions.setdefault(name, {}).update(report)
        if data:
            document["data"] = data
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    console = stdout_console(args)
    print_resolved(config, console, verbosity=getattr(args, "verbosity", 0))
    print_networks(networks, console, verbosity=getattr(args, "verbosity", 0))
    for where, info in data.items():
        console.print(f"{escape(where)}: read {info['samples']} samples ({', '.join(info['streams'])})")
    return 0


def print_networks(networks: dict, console, verbosity: int = 0) -> None:
    """A table per action: node name, op, output shape, learnable parameters; then the total (what the
    criterion trains) and the parameters it does not use."""
    from rich.table import Table

    for name, net in networks.items():
        if "deferred" in net:
            loads, writer = net["deferred"]["loads"], net["deferred"]["written_by"]
            console.print(f"{escape(name)}: loads {escape(loads)}, which block {escape(writer)} writes: "
                          f"its network is built when {escape(name)} runs")
            continue
        if verbosity >= 0:
            table = Table(title=f"network of {name}", title_justify="left", show_edge=False)
            for column in ("node", "op", "shape", "parameters"):
                table.add_column(column, justify="right" if column == "parameters" else "left",
                                 overflow="fold")
            for node in net["nodes"]:
                count = f"{node['parameters']:,}" if node["parameters"] else ""
                table.add_row(node["name"], node["op"], node["shape"],
                              count + (" (unused)" if node.get("unused") else ""))
            console.print()
            console.print(table)
        console.print(f"{escape(name)}: {net['parameters']:,} learnable parameters in {len(net['nodes'])} nodes")
        unused = net.get("unused_parameters") or {}
        if unused:
            console.print(f"{escape(name)}: {sum(unused.values()):,} more in {len(unused)} parameter(s) the criterion "
                          f"does not use, not trained: {escape(', '.join(unused))}")
        if "memory" in net and verbosity >= 0:
            console.print(f"{escape(name)}: memory for training: {escape(_memory_line(net['memory']))}")


def _memory_line(memory: dict) -> str:
    line = (f"parameters {human_bytes(memory['parameters'])}, gradients {human_bytes(memory['gradients'])}, "
            f"learner state {human_bytes(memory['learnerState'])}; values and gradients of a step "
            f"{human_bytes(memory['activationsPerMinibatch'])} (planned by their lifetimes) for a minibatch of "
            f"{memory['minibatchSize']} samples")
    if memory["deviceMemory"]:
        line += f"; {memory['device']} has {human_bytes(memory['deviceMemory'])}"
    return line


def print_resolved(config: Config, console, verbosity: int = 0) -> None:
    """The values the config sets (defaults too with -v), grouped by block; -q: the summary line."""
    actions = config.actions()
    plan = " -> ".join(f"{name} ({view.action})" for name, view in actions)
    console.print(f"[bold green]ok[/bold green] {escape(config.path)}: {escape(plan)}")
    if verbosity < 0:
        return
    sections = [("top level", block_entries(config, config.top, ""))]
    sections += [(f"{name} (action {view.action})", block_entries(config, view, name)) for name, view in actions]
    hidden = 0
    for title, entries in sections:
        # Without -v: what the config itself sets, each value once (inherited copies are left out).
        shown = [e for e in entries if verbosity > 0 or
                 (e.origin.kind not in ("default", "derived") and e.origin.inherited_from is None)]
        hidden += len(entries) - len(shown)
        console.print(f"\n[bold]{escape(title)}[/bold]")
        width = max((len(e.path) for e in shown), default=0)
        for entry in shown:
            console.print(f"  {entry.path.ljust(width)}  {entry.text}", markup=False)
    if hidden:
        console.print(f"\n[dim]{hidden} default or inherited values not shown: -v shows them, "
                      f"netlang explain {escape(config.path)} shows where every value comes from[/dim]")
