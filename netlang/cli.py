"""The `netlang` command (console script `netlang`, and `python -m netlang`).

`main(argv)` builds the argument parser from the command table (netlang/actions/table.py), parses the
command line, runs the command, and turns whatever goes wrong into an exit code:

    0 ok · 2 usage · 65 bad data · 70 internal error · 73 cannot create output · 75 output directory
    in use · 78 bad config · 130 interrupted

After the command's name, options and `key=value` overrides come in any order
(`netlang eval cfg.net --json modelPath=x` and `netlang eval --json cfg.net modelPath=x` are the same).
A NetlangError is rendered for a human (`file:line:col`, source line, caret, hint) without a
Python traceback unless `--debug` is given.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import sys
import traceback
import warnings

import netlang
from netlang.actions.output import stderr_console
from netlang.actions.table import COMMANDS, Command, command_named
from netlang.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, NetlangError, UsageError, render_error, suggest

DESCRIPTION = """netlang: declarative deep-learning training from one BrainScript config file.

Exit codes: 0 ok, 2 usage, 65 bad data, 70 internal error, 73 cannot create output, 75 output
directory in use, 78 bad config, 130 interrupted."""

EPILOG = """examples:
  netlang check examples/hello.net                  validate, print the resolved config
  netlang explain examples/hello.net train.SGD      values and where they come from
  netlang train examples/hello.net SGD.maxEpochs=5  train with an override
  netlang eval examples/hello.net                   evaluate the trained model

Run 'netlang COMMAND -h' for the options of a command."""

# Flags every command accepts, before or after the command name: (flags, argparse keywords).
GLOBAL_FLAGS = (
    (("--debug",), dict(action="store_true", help="show the Python traceback of errors")),
    (("-q", "--quiet"), dict(action="count", help="print less (repeatable)")),
    (("-v", "--verbose"), dict(action="count", help="print more (repeatable)")),
    (("--no-progress",), dict(action="store_true", help="no progress bars (plain log lines)")),
    (("--no-color",), dict(action="store_true", help="no colours (also when NO_COLOR is set)")),
)


def _add_global_flags(parser, suppress_defaults: bool) -> None:
    # The sub-parsers' copies must not overwrite a flag given before the command name, so their
    # defaults are suppressed; the main parser holds the real defaults.
    for flags, options in GLOBAL_FLAGS:
        parser.add_argument(*flags, **(dict(options, default=argparse.SUPPRESS) if suppress_defaults else options))


def build_parser() -> argparse.ArgumentParser:
    """The main parser, with one sub-parser per command of the table (and its aliases)."""
    parser = argparse.ArgumentParser(prog="netlang", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version and available backends")
    _add_global_flags(parser, suppress_defaults=False)
    parser.set_defaults(quiet=0, verbose=0)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in COMMANDS:
        _add_command_parser(subparsers, command)
    return parser


def _add_command_parser(subparsers, command: Command) -> None:
    parser = subparsers.add_parser(
        command.name, aliases=list(command.aliases), help=command.help, description=command.description,
        epilog=f"example:\n  {command.example}", formatter_class=argparse.RawDescriptionHelpFormatter)
    if command.takes_config:
        parser.add_argument("config", metavar="CONFIG", help="the .net (or .cntk) config file")
        parser.add_argument("rest", nargs="*", metavar="key.path|key=value" if command.key_paths else "key=value",
                            help="overrides such as SGD.maxEpochs=5 or command=test (later ones win)"
                            + ("; other words select keys" if command.key_paths else ""))
    for option in (*command.positionals, *command.options):
        parser.add_argument(*option.flags, **option.settings)
    nested = command.add_subcommands(parser) if command.add_subcommands is not None else []
    for accepting in (parser, *nested):
        _add_global_flags(accepting, suppress_defaults=True)


def parse_command_line(parser, argv: list[str]) -> argparse.Namespace:
    """The global flags before the command's name, then the command's own words in any order."""
    at = _command_position(argv)
    if at is None:                               # --help, --version, or no command at all
        return parser.parse_args(argv)
    args = parser.parse_args(argv[:at])
    command = _check_command_name(parser, argv[at])
    words = argv[at + 1:]
    sub = _subparsers(parser).choices[argv[at]]
    if command.add_subcommands is not None:      # argparse cannot intermix with nested sub-commands
        sub.parse_args(words, namespace=args)
    else:
        sub.parse_intermixed_args(words, namespace=args)
    args.command = command
    if command.takes_config:
        _split_overrides(args, command)
    return args


def _split_overrides(args, command: Command) -> None:
    """`key=value` words are overrides; the other words select keys where the command takes key paths."""
    args.overrides = tuple(word for word in args.rest if "=" in word)
    args.key_paths = [word for word in args.rest if "=" not in word]
    if args.key_paths and not command.key_paths:
        raise UsageError(f"unexpected argument '{args.key_paths[0]}'", hint="overrides are written key=value")


def _command_position(argv: list[str]) -> int | None:
    """Where the command's name is: the first word that is not a flag (none before -h/--version)."""
    for at, word in enumerate(argv):
        if word in ("-h", "--help", "--version"):
            return None
        if not word.startswith("-"):
            return at
    return None


def _check_command_name(parser, word: str) -> Command:
    command = command_named(word)
    if command is None:
        hint = suggest(word, _subparsers(parser).choices)
        if word.endswith((".net", ".cntk", ".bs")):
            hint = f"name a command first: netlang check {word}, netlang train {word}"
        raise UsageError(f"unknown command '{word}'",
                         hint=hint or f"the commands are: {', '.join(c.name for c in COMMANDS)} (netlang --help)")
    return command


def _subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


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


# NumPy's floating-point warnings ("overflow encountered in matmul" …) name a line of netlang's or
# NumPy's code, which tells a user nothing: a NaN or infinite loss is an error with the criterion's
# position, a climbing loss a divergence warning, a non-finite metric a failed evaluation.
NUMERIC_WARNINGS = (r"(overflow|invalid value|divide by zero|underflow) encountered|Mean of empty slice|"
                    r"Degrees of freedom <= 0")


@contextlib.contextmanager
def numeric_warnings_silenced():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NUMERIC_WARNINGS, category=RuntimeWarning)
        yield


def main(argv=None) -> int:
    """Run the `netlang` command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    console_args = argparse.Namespace(no_color="--no-color" in argv)
    try:
        parser = build_parser()
        try:
            args = parse_command_line(parser, argv)
        except SystemExit as stop:  # argparse: -h (0) or a usage error it already printed (2)
            return EXIT_USAGE if stop.code not in (0, None) else 0
        if args.version:
            print(version_text())
            return 0
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        args.verbosity = (args.verbose or 0) - (args.quiet or 0)
        with numeric_warnings_silenced():
            return int(args.command.runner(args) or 0)
    except NetlangError as err:
        if debug:
            traceback.print_exc()
        render_error(err, stderr_console(console_args))
        return err.exit_code
    except KeyboardInterrupt:
        stderr_console(console_args).print("netlang: interrupted", markup=False)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        stderr_console(console_args).print(
            f"netlang: internal error: {type(exc).__name__}: {exc}\n"
            + ("" if debug else "This is a bug in netlang; run again with --debug for the traceback."),
            markup=False)
        return EXIT_INTERNAL
