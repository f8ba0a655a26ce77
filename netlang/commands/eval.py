"""`netlang eval cfg.net [--json]` (alias `test`): evaluate a trained model on a reader."""
from __future__ import annotations

import json
import sys

from netlang.actions.evaluate import run_eval
from netlang.commands import add_command_parser, add_config_arguments, stdout_console
from netlang.commands.actions import blocks_for, load, print_metrics

DESCRIPTION = """Evaluate the model of each block with action = "test" or "eval": the criterion and
evaluation nodes (or evalNodeNames) averaged per sample over the reader's data."""


def register(subparsers) -> None:
    parser = add_command_parser(subparsers, "eval", DESCRIPTION, "netlang eval cfg.net --json", aliases=("test",))
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help='print {"metrics": {node: value}, "samples": N}')
    parser.set_defaults(func=run)


def run(args) -> int:
    config = load(args)
    results = {name: run_eval(config, name, view) for name, view in blocks_for(config, "eval")}
    if args.json:
        document = next(iter(results.values())) if len(results) == 1 else {"blocks": results}
        sys.stdout.write(json.dumps(document) + "\n")
    else:
        console = stdout_console(args)
        for name, result in results.items():
            print_metrics(console, name, result)
    return 0
