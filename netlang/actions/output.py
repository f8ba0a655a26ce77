"""Where and how the commands print: results on stdout, progress and errors on stderr.

`--json` documents own stdout; rich colours follow `--no-color` and the NO_COLOR convention.
"""
from __future__ import annotations

import os
import sys

from rich.console import Console

from netlang.runtime.progress import Progress, _fmt_metric


def color_disabled(args) -> bool:
    return bool(getattr(args, "no_color", False)) or "NO_COLOR" in os.environ


def stdout_console(args) -> Console:
    return Console(file=sys.stdout, no_color=color_disabled(args), highlight=False, soft_wrap=True)


def stderr_console(args=None) -> Console:
    return Console(stderr=True, no_color=color_disabled(args), highlight=False, soft_wrap=True)


def progress_for(args) -> Progress:
    """Training progress on stderr: bars in a terminal, plain lines with --no-progress or in logs."""
    quiet = (getattr(args, "quiet", 0) or 0) > 0
    bar = False if getattr(args, "no_progress", False) else None
    return Progress(enabled=not quiet, console=stderr_console(args), bar=bar)


def print_metrics(console, name: str, result: dict) -> None:
    """An evaluation's line: each metric's per-sample average and the samples it averaged over."""
    counts = result.get("counts", {})
    # A metric over per-sequence labels (an intent) is averaged over fewer samples: say how many.
    parts = "; ".join(_fmt_metric(k, v) + (f" (over {counts[k]})" if counts.get(k, result["samples"]) != result["samples"]
                                           else "") for k, v in result["metrics"].items())
    console.print(f"{name}: {parts} ({result['samples']} samples)", markup=False)


def print_written(console, name: str, result: dict) -> None:
    """A write action's files, one line per output node."""
    for node, path in result["files"].items():
        console.print(f"{name}: wrote {node} for {result['samples']} samples to {path}", markup=False)
