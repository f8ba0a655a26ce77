"""The `netlang` sub-commands: one module per command.

Protocol: `netlang/commands/<name>.py` exposes `register(subparsers)`, which adds its argparse
sub-parser(s) and sets `func=run`, and `run(args) -> int` (the exit code). `netlang/cli.py` lists
the modules in `COMMAND_MODULES`; adding a command is adding its module there.

This package also holds what several commands share: the config-file arguments, the split of
trailing `key=value` overrides, the consoles, and the stand-ins for commands not built yet.
"""
from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from netlang.errors import EXIT_INTERNAL, UsageError

# Flags every command accepts, before or after the command name: (flags, argparse keywords).
GLOBAL_FLAGS = (
    (("--debug",), dict(action="store_true", help="show the Python traceback of errors")),
    (("-q", "--quiet"), dict(action="count", help="print less (repeatable)")),
    (("-v", "--verbose"), dict(action="count", help="print more (repeatable)")),
    (("--no-progress",), dict(action="store_true", help="no progress bars (plain log lines)")),
    (("--no-color",), dict(action="store_true", help="no colours (also when NO_COLOR is set)")),
)

# Commands that are part of netlang's surface but whose module may not exist yet:
# name -> (one-line help, example, aliases).
PLANNED = {
    "train": ("train the network of a config", "netlang train cfg.net SGD.maxEpochs=5", ()),
    "eval": ("evaluate a trained model on a data set", "netlang eval cfg.net", ("test",)),
    "write": ("write the values of output nodes to files", "netlang write cfg.net outputPath=out.txt", ()),
    "run": ("run the config's command list (command = train:test)", "netlang run cfg.net", ()),
    "check": ("validate a config and print the resolved configuration", "netlang check cfg.net", ()),
    "explain": ("show every effective value and where it came from", "netlang explain cfg.net train.SGD", ()),
    "data": ("prepare public data sets and synthetic data in reader formats", "netlang data --help", ()),
}


def add_command_parser(subparsers, name: str, description: str, example: str, aliases=()):
    """A sub-parser with the one-line help, a description and a worked example in its `-h`."""
    return subparsers.add_parser(
        name, aliases=list(aliases), help=PLANNED.get(name, (description,))[0], description=description,
        epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config_arguments(parser, extra_positionals: str | None = None) -> None:
    """`CONFIG [key=value ...]`: the config file and command-line overrides (dotted keys allowed)."""
    parser.add_argument("config", metavar="CONFIG", help="the .net (or .cntk) config file")
    metavar = "key=value" if extra_positionals is None else extra_positionals
    parser.add_argument("rest", nargs="*", metavar=metavar,
                        help="overrides such as SGD.maxEpochs=5 or command=test (later ones win)"
                        + ("" if extra_positionals is None else "; other words select keys"))


def split_overrides(words) -> tuple[tuple[str, ...], list[str]]:
    """Trailing command-line words: `key=value` overrides, and everything else (e.g. key paths)."""
    overrides = tuple(w for w in words if "=" in w)
    others = [w for w in words if "=" not in w]
    return overrides, others


def color_disabled(args) -> bool:
    return bool(getattr(args, "no_color", False)) or "NO_COLOR" in os.environ


def stdout_console(args) -> Console:
    return Console(file=sys.stdout, no_color=color_disabled(args), highlight=False, soft_wrap=True)


def stderr_console(args=None) -> Console:
    return Console(stderr=True, no_color=color_disabled(args), highlight=False, soft_wrap=True)


def register_placeholder(subparsers, name: str, load_error: BaseException | None = None) -> None:
    """A command that is not available in this build: it is listed and says so when run."""
    help_text, example, aliases = PLANNED[name]
    parser = add_command_parser(subparsers, name, help_text, example, aliases)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(args) -> int:
        if load_error is not None:
            stderr_console(args).print(f"netlang {name}: this command failed to load "
                                       f"({type(load_error).__name__}: {load_error}); run with --debug "
                                       "for details", markup=False)
            if getattr(args, "debug", False):
                import traceback

                traceback.print_exception(load_error, file=sys.stderr)
            return EXIT_INTERNAL
        raise UsageError(f"'netlang {name}' is not available in this build yet",
                         hint="netlang check and netlang explain are available")

    parser.set_defaults(func=run)
    return parser


__all__ = ["PLANNED", "add_command_parser", "add_config_arguments", "split_overrides", "stdout_console",
           "stderr_console", "register_placeholder"]
