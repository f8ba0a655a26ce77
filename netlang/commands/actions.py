"""Shared by the commands that run actions (train, eval, write, run): selecting blocks, progress."""
from __future__ import annotations

from netlang.commands import split_overrides, stderr_console
from netlang.compiler.graph import load_config
from netlang.errors import SchemaError, UsageError
from netlang.runtime.progress import Progress, _fmt_metric

# Which `action` values each command runs (CNTK's action names).
ACTIONS_OF = {
    "train": ("train",),
    "eval": ("test", "eval"),
    "write": ("write",),
}


def load(args):
    overrides, extra = split_overrides(args.rest)
    if extra:
        raise UsageError(f"unexpected argument '{extra[0]}'", hint="overrides are written key=value")
    return load_config(args.config, overrides)


def blocks_for(config, command: str):
    """The command blocks of `command = A:B` that this command runs, in order."""
    wanted = ACTIONS_OF[command]
    blocks = [(name, view) for name, view in config.actions() if view.action in wanted]
    if not blocks:
        listed = ", ".join(f"{n} ({v.action})" for n, v in config.actions()) or "none"
        raise SchemaError(f"no block with action {' or '.join(wanted)} in command = … (blocks: {listed})",
                          config.top.span_of("command"),
                          hint=f"add a block with action = \"{wanted[0]}\" and list it in command")
    return blocks


def progress_for(args):
    quiet = (getattr(args, "quiet", 0) or 0) > 0
    bar = False if getattr(args, "no_progress", False) else None
    return Progress(enabled=not quiet, console=stderr_console(args), bar=bar)


def print_metrics(console, name: str, result: dict) -> None:
    counts = result.get("counts", {})
    # A metric over per-sequence labels (an intent) is averaged over fewer samples: say how many.
    parts = "; ".join(_fmt_metric(k, v) + (f" (over {counts[k]})" if counts.get(k, result["samples"]) != result["samples"]
                                           else "") for k, v in result["metrics"].items())
    console.print(f"{name}: {parts} ({result['samples']} samples)", markup=False)
