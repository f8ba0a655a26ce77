"""The commands of `netlang`, each declared once: the one table the CLI and `netlang run` work from.

A `Command` says everything about one command: its name and aliases, the line `netlang --help`
shows, the description and example of `netlang NAME -h`, its options, and what it does. Commands
that run blocks of the config (train, eval, write) also name the CNTK `action` values they run, how
one such block runs (`block_runner`) and how its result is printed (`printer`); `netlang run`
executes the blocks of `command = A:B` through the same entries, whatever their action. The CLI
(netlang/cli.py) builds its argument parser from `COMMANDS`.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlang.actions import check, data, explain, export, graph, inspect, node_times, plot
from netlang.actions.edit import print_edited, run_edit
from netlang.actions.evaluate import run_eval, run_write
from netlang.actions.output import print_metrics, print_written, progress_for, stdout_console
from netlang.actions.train import run_train
from netlang.compiler.graph import load_config
from netlang.errors import DataError, SchemaError


@dataclass(frozen=True)
class Option:
    """A command-line option: its flags and argparse's keywords (help, action, metavar …)."""

    flags: tuple[str, ...]
    settings: dict


def option(*flags: str, **settings) -> Option:
    return Option(flags, settings)


@dataclass(frozen=True)
class Command:
    name: str
    help: str                                   # one line in `netlang --help`
    description: str                            # `netlang NAME -h`
    example: str
    runner: Callable[[Any], int]                # the parsed arguments -> exit code
    aliases: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    takes_config: bool = True                   # CONFIG [key=value ...]
    positionals: tuple[Option, ...] = ()        # the arguments of a command without a config
    key_paths: bool = False                     # other words than key=value select keys (explain)
    add_subcommands: Callable | None = None     # (parser) -> None: a tree of its own (data)
    actions: tuple[str, ...] = ()               # the CNTK `action` values of the blocks it runs
    block_runner: Callable | None = None        # (config, block name, view, progress, args) -> result
    printer: Callable | None = None             # (console, block name, result) -> None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


# ---- running the blocks of `command = A:B` ----------------------------------------------------------

def run_own_blocks(args) -> int:
    """train, eval, write: the blocks of `command = A:B` whose action is one of this command's."""
    config = load_config(args.config, _overrides(args))
    return _run_blocks(args, config, blocks_of(config, args.command))


def run_every_block(args) -> int:
    """run: every block of `command = A:B`, each by the command whose action it has."""
    config = load_config(args.config, _overrides(args))
    return _run_blocks(args, config, config.actions())


def _overrides(args) -> tuple:
    """The command line's overrides; `--no-cuda-graph` is the override `cudaGraph=false` (last: it wins)."""
    extra = ("cudaGraph=false",) if getattr(args, "no_cuda_graph", False) else ()
    return tuple(args.overrides) + extra


def blocks_of(config, command: Command) -> list:
    """The blocks of `command = A:B` that `command` runs, in order; none is a config error."""
    blocks = [(name, view) for name, view in config.actions() if view.action in command.actions]
    if not blocks:
        listed = ", ".join(f"{n} ({v.action})" for n, v in config.actions()) or "none"
        raise SchemaError(f"no block with action {' or '.join(command.actions)} in command = … (blocks: {listed})",
                          config.top.span_of("command"),
                          hint=f"add a block with action = \"{command.actions[0]}\" and list it in command")
    return blocks


def _run_blocks(args, config, blocks) -> int:
    # Every block's command is known before the first one runs: a block netlang cannot run is an
    # error now, not after hours of training the blocks before it.
    plan = [(name, view, _command_for_block(name, view)) for name, view in blocks]
    as_json = getattr(args, "json", False)
    console = stdout_console(args)
    progress = progress_for(args)
    results = {}
    try:
        for name, view, command in plan:
            results[name] = command.block_runner(config, name, view, progress, args)
            if command.printer is not None and not as_json:
                command.printer(console, name, results[name])
    finally:
        progress.close()
    if as_json:
        document = next(iter(results.values())) if len(results) == 1 else {"blocks": results}
        sys.stdout.write(json.dumps(_json_numbers(document), allow_nan=False) + "\n")
    _fail_on_non_finite(results)
    return 0


def _json_numbers(value):
    """NaN and infinity are not JSON: they become null (the result's `nonFinite` says which)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_numbers(v) for v in value]
    return value


def _fail_on_non_finite(results: dict) -> None:
    """A metric that is NaN or infinite is a failed evaluation (exit 65), after its result is shown."""
    bad = [f"{block}: {metric} = {result['metrics'][metric]}" for block, result in results.items()
           if isinstance(result, dict) for metric in result.get("nonFinite", ())]
    if bad:
        raise DataError(f"not a finite number: {'; '.join(bad)}",
                        hint="the model's parameters or the data hold NaN or infinity, or the model diverged")

def _command_for_block(name: str, view) -> Command:
    """The command that runs blocks with the block's `action` (CNTK's names). The config language
    accepts every CNTK action; one that no command runs is an error at the block's `action`."""
    for command in COMMANDS:
        if view.action in command.actions:
            return command
    available = ", ".join(action for command in COMMANDS for action in command.actions)
    raise SchemaError(f"action '{view.action}' of block '{name}' is not available in netlang yet",
                      view.span_of("action"), hint=f"available: {available}")


def _train(config, name: str, view, progress, args):
    return run_train(config, name, view, progress, resume_anyway=getattr(args, "resume_anyway", False),
                     profile=getattr(args, "profile", False))


def _evaluate(config, name: str, view, progress, args):
    return run_eval(config, name, view)      # one result line at the end: no progress to report


def _write(config, name: str, view, progress, args):
    return run_write(config, name, view)


def _edit(config, name: str, view, progress, args):
    return run_edit(config, name, view)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


RESUME_ANYWAY = option("--resume-anyway", action="store_true",
                       help="resume from the newest checkpoint even when it was written with other training "
                            "settings (learning rates, network, minibatch size …); without it that is an error")


NO_CUDA_GRAPH = option("--no-cuda-graph", action="store_true",
                       help="GPU: run every step eagerly, no CUDA graphs (the override cudaGraph=false)")


# ---- the table ------------------------------------------------------------------------------------

COMMANDS = (
    Command(
        name="train",
        help="train the network of a config",
        description="""Train the network of each block with action = "train" (in command order). Models are
written as <modelPath>.<epoch> with a checkpoint after every epoch and <modelPath> at the end; with
makeMode = true (the default) a restarted run resumes from the newest checkpoint, unless that was
written with other training settings (then --resume-anyway goes on, makeMode=false starts afresh).
One training at a time per output directory: a second one exits 75 at once. Ctrl-C or SIGTERM stops
at the next minibatch, writes a checkpoint and exits 130.""",
        example="netlang train examples/hello.net SGD.maxEpochs=5",
        options=(RESUME_ANYWAY, NO_CUDA_GRAPH,
                 option("--profile", action="store_true",
                        help="time every step's phases (read, forward, backward, quantize, communicate, "
                             "wait, update) on every worker and print them after each epoch")),
        runner=run_own_blocks,
        actions=("train",),
        block_runner=_train,
    ),
    Command(
        name="eval",
        aliases=("test",),
        help="evaluate a trained model on a data set",
        description="""Evaluate the model of each block with action = "test" or "eval": the criterion and
evaluation nodes (or evalNodeNames) averaged per sample over the reader's data.""",
        example="netlang eval examples/hello.net --json",
        options=(option("--json", action="store_true",
                        help='print {"metrics": {node: value}, "samples": N}'), NO_CUDA_GRAPH),
        runner=run_own_blocks,
        actions=("test", "eval"),
        block_runner=_evaluate,
        printer=print_metrics,
    ),
    Command(
        name="write",
        help="write the values of output nodes to files",
        description="""Run the model of each block with action = "write" over its reader (in file order) and
write every output node (outputNodeNames) to <outputPath>.<node>: one line per sample, values
separated by spaces, or the arg-max's label with format = { type = "category" ; labelMappingFile = … }.""",
        example="netlang write examples/hello.net command=write",
        runner=run_own_blocks,
        actions=("write",),
        block_runner=_write,
        printer=print_written,
    ),
    Command(
        name="edit",
        help="build a network from trained models (load, clone, edit) and save it",
        description="""Build the network of each block with action = "edit" (BrainScriptNetworkBuilder, typically
with BS.Network.Load, CloneFunction and Edit) and write it to outputModelPath: parameters taken from a
model keep their values, new ones get their initial values. With makeMode = true (the default) an
existing outputModelPath is left alone.""",
        example="netlang edit configs/vision/fast_rcnn.net",
        runner=run_own_blocks,
        actions=("edit",),
        block_runner=_edit,
        printer=print_edited,
    ),
    Command(
        name="run",
        help="run the config's command list (command = train:test)",
        description="Run every block named by command = A:B in order: train, test/eval, write and edit actions.",
        example="netlang run examples/hello.net command=train:test",
        options=(RESUME_ANYWAY, NO_CUDA_GRAPH),
        runner=run_every_block,
    ),
    Command(
        name="check",
        help="validate a config and print the resolved configuration",
        description="""Validate a config without training: parse it, evaluate every setting, check it
against the schemas (unknown keys, types, required keys), and print the resolved configuration.""",
        example="netlang check examples/hello.net train.SGD.maxEpochs=5 --json",
        options=(option("--json", action="store_true", help="print one JSON document {config, actions}"),
                 option("--no-data", action="store_true",
                        help="do not read a minibatch from each reader (check the config and networks only)")),
        runner=check.run,
    ),
    Command(
        name="explain",
        help="show every effective value and where it came from",
        description="""Show every effective value of a config (schema defaults included) and where it came
from: default, file:line:col, include file:line:col, or override. Give key paths such as train.SGD
or train.SGD.maxEpochs to see only those; a path to a value of your own (a computed value g, a
record, a node train.network.h) evaluates that value, and only that. --schedule shows what the
learner uses in each epoch.""",
        example="netlang explain examples/hello.net train.SGD.learningRatesPerSample",
        options=(option("--json", action="store_true", help="print {key: {value, origin}} as JSON"),
                 option("--yaml", metavar="FILE", help="write the resolved configuration as YAML ('-': stdout)"),
                 option("--schedule", action="store_true",
                        help="per epoch: minibatch size, learning rate per sample and per minibatch, momentum "
                             "per minibatch and time constant, dropout rate (of the train actions named)")),
        key_paths=True,
        runner=explain.run,
    ),
    Command(
        name="inspect",
        help="list the nodes of a model file: names, ops, shapes, parameters",
        description="""List the nodes of a trained model file: each node's name and the member that reaches it
after m = BS.Network.Load (...) (m.conv1_W for conv1.W), its op, shape and inputs, and the parameter
count of each parameter (frozen ones marked): the names CloneFunction and Edit need.""",
        example="netlang inspect out/shapes_classifier/model.dnn",
        positionals=(option("model", metavar="MODELFILE", help="a model file written by train or edit"),),
        options=(option("--json", action="store_true", help="print the nodes as one JSON document"),),
        takes_config=False,
        runner=inspect.run,
    ),
    Command(
        name="time",
        help="time each node's forward and backward pass",
        description="""Time N training steps (forward and backward) of an action's network on its device, after
one step of warm-up, node by node: sorted by time, with each node's share of the step and the place
in the config that made it (recurrent loops count as one). Inputs are random unless --reader reads
the action's data; SGD.minibatchSize=... and deviceId=... override as usual.""",
        example="netlang time configs/vision/mnist_convnet.net -n 5",
        options=(option("-n", "--minibatches", type=_positive, default=10, metavar="N",
                        help="minibatches to time (default 10)"),
                 option("--action", metavar="NAME", help="the action whose network to time (default: the first "
                                                         "with a network)"),
                 option("--reader", action="store_true", help="read minibatches from the action's reader"),
                 option("--sequence-length", type=_positive, default=20, metavar="T",
                        help="steps per random sequence (default 20)"),
                 option("--json", action="store_true", help="print the figures as JSON")),
        runner=node_times.run,
    ),
    Command(
        name="graph",
        help="draw the network (Graphviz DOT, SVG, PNG)",
        description="""Write an action's network as a Graphviz graph: nodes labelled with their config names,
ops and shapes, inputs feeding the nodes that read them, recurrent loops as clusters. Without -o the
DOT text goes to stdout; -o FILE.svg, .png or .pdf renders it with Graphviz's dot program.""",
        example="netlang graph examples/hello.net -o hello.svg",
        options=(option("-o", "--output", metavar="FILE", help="write to FILE (.dot, or .svg/.png/.pdf through dot)"),
                 option("--action", metavar="NAME", help="the action whose network to draw (default: the first "
                                                         "with a network)")),
        runner=graph.run,
    ),
    Command(
        name="export",
        help="export a trained model to ONNX",
        description="""Export a trained model to ONNX (opset 17): a model file written by training, or the
modelPath of a config's action. Inputs and outputs keep netlang's run-time layout ([N, C, H, W] for
images, [T, N, ...] for sequences, which are taken as all of full length); recurrent loops become
ONNX Scan operators. A node whose op cannot be exported is an error naming it. Needs onnx
(pip install 'netlang[onnx]').""",
        example="netlang export examples/models/hello.dnn -o hello.onnx",
        options=(option("-o", "--output", metavar="FILE", help="the ONNX file (default: the model's name + .onnx)"),
                 option("--action", metavar="NAME", help="with a config: the action whose modelPath to export"),
                 option("--outputs", metavar="NODES", action="append",
                        help="the nodes to export, a:b (default: the output nodes)")),
        runner=export.run,
    ),
    Command(
        name="plot",
        help="draw training and validation curves of a run",
        description="""Draw the criterion and metrics of a run from its metrics.jsonl (in the directory of its
modelPath), per progress report and per epoch, training and validation. A resumed run's records of
a redone epoch replace those of the interrupted attempt. Needs matplotlib (pip install
'netlang[plot]').""",
        example="netlang plot examples/models -o curves.png",
        takes_config=False,
        positionals=(option("outdir", metavar="OUTDIR", help="the run's directory (that of modelPath), or its "
                                                             "metrics.jsonl"),),
        options=(option("-o", "--output", metavar="FILE", help="the picture (default OUTDIR/curves.png)"),),
        runner=plot.run,
    ),
    Command(
        name="data",
        help="prepare public data sets and synthetic data in reader formats",
        description="""Prepare data for netlang's readers: convert MNIST or Fashion-MNIST IDX files to
CNTKTextFormat (+ PNG files and map files), ATIS IOB files to CTF sequences with vocabularies, FSDD
recordings to HTK features with SCP lists and an MLF, or write a small synthetic classification set;
score slot tagging output (score-slots) and isolated-word recognition (score-utterances).""",
        example=data.EXAMPLE,
        takes_config=False,
        add_subcommands=data.add_subcommands,
        runner=data.run,
    ),
)


def command_named(word: str) -> Command | None:
    """The command called `word` (a name or an alias), or None."""
    return next((c for c in COMMANDS if word in c.names), None)
