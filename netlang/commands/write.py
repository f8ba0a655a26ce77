"""`netlang write cfg.net`: write output node values to `<outputPath>.<node>` text files."""
from __future__ import annotations

from netlang.actions.evaluate import run_write
from netlang.commands import add_command_parser, add_config_arguments, stdout_console
from netlang.commands.actions import blocks_for, load

DESCRIPTION = """Run the model of each block with action = "write" over its reader (in file order) and
write every output node (outputNodeNames) to <outputPath>.<node>: one line per sample, values
separated by spaces, or the arg-max's label with format = { type = "category" ; labelMappingFile = … }."""


def register(subparsers) -> None:
    parser = add_command_parser(subparsers, "write", DESCRIPTION, "netlang write cfg.net outputPath=out/result")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    config = load(args)
    console = stdout_console(args)
    for name, view in blocks_for(config, "write"):
        result = run_write(config, name, view)
        for node, path in result["files"].items():
            console.print(f"{name}: wrote {node} for {result['samples']} samples to {path}", markup=False)
    return 0
