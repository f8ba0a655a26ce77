"""The `netlang` command (console script `netlang`, and `python -m netlang`).

`main(argv)` parses the command line, dispatches to a command module (`netlang/commands/<name>.py`,
listed in COMMAND_MODULES) and turns whatever goes wrong into an exit code:

    0 ok · 2 usage · 65 bad data · 70 internal error · 78 bad config · 130 interrupted

A NetlangError is rendered for a human (`file:line:col`, source line, caret, hint) without a
Python traceback unless `--debug` is given.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import sys
import traceback

import netlang
from netlang import commands
from netlang.commands import GLOBAL_FLAGS
from netlang.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, NetlangError, UsageError, render_error, suggest

# The command modules, in the order `--help` lists them. A module that is missing or fails to
# import becomes a placeholder; it never breaks the other commands.
COMMAND_MODULES = ("train", "eval", "write", "run", "check", "explain", "data")

DESCRIPTION = """netlang: declarative deep-learning training from one BrainScript config file.

Exit codes: 0 ok, 2 usage, 65 bad data, 70 internal error, 78 bad config, 130 interrupted."""

EPILOG = """examples:
  netlang check examples/hello.net                  validate, print the resolved config
  netlang explain examples/hello.net train.SGD      values and where they come from
  netlang train cfg.net SGD.maxEpochs=5             train with an override

Run 'netlang COMMAND -h' for the options of a command."""

def _add_global_flags(parser, suppress_defaults: bool) -> None:
    # The sub-parsers' copies must not overwrite a flag given before the command name, so their
    # defaults are suppressed; the main parser holds the real defaults.
    for flags, options in GLOBAL_FLAGS:
        options = dict(options)
        if suppress_defaults:
            options["default"] = argparse.SUPPRESS
        try:
            parser.add_argument(*flags, **options)
        except argparse.ArgumentError:
            pass  # the command defines this flag itself


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netlang", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version and available backends")
    _add_global_flags(parser, suppress_defaults=False)
    parser.set_defaults(quiet=0, verbose=0)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMAND_MODULES:
        _register(subparsers, name)
    for sub in {id(p): p for p in subparsers.choices.values()}.values():
        _add_global_flags(sub, suppress_defaults=True)
    return parser


def _register(subparsers, name: str) -> None:
    module_name = f"netlang.commands.{name}"
    try:
        if importlib.util.find_spec(module_name) is None:
            raise ModuleNotFoundError(module_name)
    except ModuleNotFoundError:
        if name in commands.PLANNED:
            commands.register_placeholder(subparsers, name)
        return
    try:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    except Exception as exc:  # a broken command module must not take the others down
        if name in commands.PLANNED and name not in subparsers.choices:
            commands.register_placeholder(subparsers, name, load_error=exc)


def version_text() -> str:
    """netlang's version plus what it can run on (numpy always; cupy and mpi4py when installed)."""
    lines = [f"netlang {netlang.__version__}",
             f"python {sys.version.split()[0]}",
             f"numpy {_distribution_version('numpy') or '?'}"]
    for module, what in (("cupy", "GPU backend"), ("mpi4py", "MPI scale-out")):
        version = _module_version(module)
        lines.append(f"{module} {version} ({what})" if version else f"{module}: not installed ({what} off)")
    return "\n".join(lines)


def _module_version(module: str) -> str | None:
    # Versions come from package metadata: importing cupy is slow and importing mpi4py.MPI
    # would initialise MPI.
    if importlib.util.find_spec(module) is None:
        return None
    names = importlib.metadata.packages_distributions().get(module, [module])
    for name in names:
        version = _distribution_version(name)
        if version:
            return version if name == module else f"{version} ({name})"
    return "?"


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_command_word(argv: list[str]) -> str | None:
    for word in argv:
        if word in ("-h", "--help", "--version"):
            return None
        if not word.startswith("-"):
            return word
    return None


def _check_command_name(parser, argv: list[str]) -> None:
    word = _first_command_word(argv)
    choices = _subparsers(parser).choices
    if word is not None and word not in choices:
        hint = suggest(word, choices)
        if word.endswith((".net", ".cntk", ".bs")):
            hint = f"name a command first: netlang check {word}, netlang train {word}"
        raise UsageError(f"unknown command '{word}'",
                         hint=hint or f"the commands are: {', '.join(COMMAND_MODULES)} (netlang --help)")


def _subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def main(argv=None) -> int:
    """Run the `netlang` command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    console_args = argparse.Namespace(no_color="--no-color" in argv)
    try:
        parser = build_parser()
        _check_command_name(parser, argv)
        try:
            args = parser.parse_args(argv)
        except SystemExit as stop:  # argparse: -h (0) or a usage error it already printed (2)
            return EXIT_USAGE if stop.code not in (0, None) else 0
        if args.version:
            print(version_text())
            return 0
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        args.verbosity = (args.verbose or 0) - (args.quiet or 0)
        return int(args.func(args) or 0)
    except NetlangError as err:
        if debug:
            traceback.print_exc()
        render_error(err, commands.stderr_console(console_args))
        return err.exit_code
    except KeyboardInterrupt:
        commands.stderr_console(console_args).print("netlang: interrupted", markup=False)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        commands.stderr_console(console_args).print(
            f"netlang: internal error: {type(exc).__name__}: {exc}\n"
            + ("" if debug else "This is a bug in netlang; run again with --debug for the traceback."),
            markup=False)
        return EXIT_INTERNAL
