"""`netlang time cfg.net [-n N] [--action A] [--reader] [--json]`: where a training step's time goes.

As `caffe time` does for layers: N training steps (forward, backward; no update) of the action's
network on its device, after one step of warm-up, timed per node; the nodes sorted by time, each
with its forward and backward milliseconds per minibatch, its share of the step, and the place in
the config that made it. Inputs are random (one-hot labels and sparse inputs) unless `--reader`
reads real minibatches; the minibatch size is the action's (`SGD.minibatchSize=…` overrides it).
"""
from __future__ import annotations

import json
import sys
import time

from rich.markup import escape
from rich.table import Table

from netlang.actions.common import action_with_network, backend_for, create_reader
from netlang.actions.output import stdout_console
from netlang.compiler.graph import load_config
from netlang.compiler.graph.network import build_action_network
from netlang.compiler.lang.settings import reader_settings
from netlang.runtime.executor import Executor
from netlang.runtime.feeding import feeds_from_minibatch, synthetic_feeds
from netlang.runtime.timing import StepTimer

WARMUP = 1


def run(args) -> int:
    config = load_config(args.config, args.overrides)
    name, view = action_with_network(config, args.action)
    network = build_action_network(view.network_expr())
    backend = backend_for(view)
    samples = _minibatch_size(view)
    batches = _minibatches(args, view, network, backend, samples)
    executor = Executor(network, backend, seed=1)
    criterion = (network.groups.get("criterion") or [None])[0]
    learnable = network.learnable_parameters if criterion is not None else []
    # What a training step computes: the criterion's gradient and the evaluation nodes (without a
    # criterion: the outputs, forward only).
    group = "evaluation" if criterion is not None else "output"
    outputs = [n for n in network.groups.get(group, []) if n is not criterion]
    timer = StepTimer(backend)
    for index, feeds in enumerate(batches):
        if index == WARMUP:
            executor.step_timer = timer
            started = time.perf_counter()
        executor.run(feeds, outputs, loss=criterion, wrt=learnable, training=criterion is not None)
    backend.synchronize()
    seconds = time.perf_counter() - started
    report = _report(config.path, name, timer, args.minibatches, samples, backend, seconds)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        print_report(report, stdout_console(args))
    return 0


def _minibatch_size(view) -> int:
    if view.SGD is not None:
        return int(view.SGD.minibatchSize.value(1))
    return int(view.minibatchSize.value(1)) if view.minibatchSize is not None else 256


def _minibatches(args, view, network, backend, samples: int) -> list:
    count = WARMUP + args.minibatches
    if not args.reader:
        return [synthetic_feeds(network, samples, args.sequence_length, seed=i, dtype=backend.dtype)
                for i in range(count)]
    source = create_reader(reader_settings(view.reader), network, dtype=backend.dtype, prefetch=False)
    batches, sweep = [], 0
    try:
        source.start_epoch(sweep)
        while len(batches) < count:          # as many sweeps over the data as it takes
            minibatch = source.next_minibatch(samples)
            if minibatch.num_samples:
                batches.append(feeds_from_minibatch(network, minibatch, backend.dtype))
            if minibatch.end_of_epoch:
                sweep += 1
                source.start_epoch(sweep)
        return batches
    finally:
        source.close()


def _report(path: str, action: str, timer: StepTimer, minibatches: int, samples: int, backend,
            seconds: float) -> dict:
    ranked = timer.ranked()
    total = sum(u.total for u in ranked) or 1e-12
    per = 1000.0 / max(minibatches, 1)
    nodes = []
    for entry in ranked:
        unit = entry.unit
        loop = getattr(unit, "nodes", None)
        first = loop[0] if loop else unit
        nodes.append({"name": first.name + (f" (+{len(loop) - 1} in its loop)" if loop else ""),
                      "op": "loop" if loop else unit.op,
                      "forward_ms": entry.forward * per, "backward_ms": entry.backward * per,
                      "total_ms": entry.total * per, "share": entry.total / total,
                      "where": _where(first.span, path)})
    return {"config": path, "action": action, "device": str(backend.device),
            "precision": backend.dtype.__name__, "minibatches": minibatches, "minibatchSize": samples,
            "step_ms": seconds * per, "nodes": nodes}


def _where(span, config_path: str) -> str:
    """`line:col` in the config itself, `file:line:col` in an included file."""
    if span is None:
        return ""
    return f"{span.line}:{span.col}" if span.file == config_path else str(span)


def print_report(report: dict, console) -> None:
    table = Table(show_edge=False, title_justify="left",
                  title=f"{report['action']}: {report['minibatches']} minibatches of {report['minibatchSize']} "
                        f"samples on {report['device']} ({report['precision']})")
    for column in ("node", "op", "forward ms", "backward ms", "total ms", "share", "config line"):
        table.add_column(column, justify="right" if column.endswith(("ms", "share")) else "left",
                         overflow="fold")
    for node in report["nodes"]:
        table.add_row(escape(node["name"]), node["op"], f"{node['forward_ms']:.3f}", f"{node['backward_ms']:.3f}",
                      f"{node['total_ms']:.3f}", f"{node['share'] * 100:.1f}%", escape(node["where"]))
    if not console.is_terminal:
        console.width = 200      # in a log or a pipe the table keeps its width rather than wrapping cells
    console.print(table)
    forward = sum(n["forward_ms"] for n in report["nodes"])
    backward = sum(n["backward_ms"] for n in report["nodes"])
    console.print(f"per minibatch: {report['step_ms']:.2f} ms (forward {forward:.2f} ms, backward {backward:.2f} ms; "
                  "the device is waited for after every node)", markup=False)
