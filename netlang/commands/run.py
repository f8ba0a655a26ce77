"""`netlang run cfg.net`: execute the blocks of `command = A:B` in order, whatever their action."""
from __future__ import annotations

from netlang.actions.evaluate import run_eval, run_write
from netlang.actions.train import run_train
from netlang.commands import add_command_parser, add_config_arguments, stdout_console
from netlang.commands.actions import load, print_metrics, progress_for
from netlang.errors import SchemaError

DESCRIPTION = """Run every block named by command = A:B in order: train, test/eval and write actions."""


def register(subparsers) -> None:
    parser = add_command_parser(subparsers, "run", DESCRIPTION, "netlang run cfg.net command=train:test")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    config = load(args)
    console = stdout_console(args)
    progress = progress_for(args)
    try:
        for name, view in config.actions():
            if view.action == "train":
                run_train(config, name, view, progress)
            elif view.action in ("test", "eval"):
                print_metrics(console, name, run_eval(config, name, view))
            elif view.action == "write":
                for node, path in run_write(config, name, view)["files"].items():
                    console.print(f"{name}: wrote {node} to {path}", markup=False)
            else:
                raise SchemaError(f"action '{view.action}' of block '{name}' is not available in netlang yet",
                                  view.span_of("action"), hint="available: train, test, eval, write")
    finally:
        progress.close()
    return 0
