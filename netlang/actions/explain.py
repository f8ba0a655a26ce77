"""`netlang explain cfg.net [key.path ...] [key=value ...] [--json] [--yaml FILE|-]`.

Every effective value, schema defaults included, with where it came from: `default`, the
`file:line:col` that sets it, `include file:line:col`, or `override` (command line). Values found in
an enclosing block (CNTK's parent lookup) say so: `cfg.net:12:1 (from top level)`. Key paths select
a block or a key (`train.SGD`, `train.SGD.maxEpochs`, case-insensitive). `--yaml` writes the resolved
configuration (`netlang.compiler.lang.config.resolved_config_dict`) as YAML, the file the trainer keeps per run.
"""
from __future__ import annotations

import json
import sys

import yaml
from rich.markup import escape

from netlang.actions.output import stdout_console
from netlang.compiler.graph import load_config
from netlang.compiler.lang.config import Entry, config_entries, resolved_config_dict
from netlang.errors import UsageError, suggest


def run(args) -> int:
    config = load_config(args.config, args.overrides)
    if args.yaml:
        write_yaml(resolved_config_dict(config), args.yaml)
        return 0
    entries = select(config_entries(config), args.key_paths)
    if args.json:
        document = {e.path: {"value": e.value, "origin": str(e.origin)} for e in entries}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    print_entries(entries, stdout_console(args))
    return 0


def select(entries: list[Entry], keys: list[str]) -> list[Entry]:
    """The entries under the given key paths (all when none); an unknown path is a usage error."""
    if not keys:
        return entries
    chosen = []
    for key in keys:
        wanted = key.lower()
        matches = [e for e in entries if _under(e.path.lower(), wanted)]
        if not matches:
            hint = suggest(key, [e.path for e in entries])
            raise UsageError(f"no setting '{key}' in this config", hint=hint or "run netlang explain "
                             "without key paths to list every setting")
        chosen += [e for e in matches if e not in chosen]
    return chosen


def _under(path: str, key: str) -> bool:
    return path == key or path.startswith(key + ".") or path.startswith(key + "[")


def print_entries(entries: list[Entry], console) -> None:
    key_width = max((len(e.path) for e in entries), default=0)
    value_width = min(max((len(e.text) for e in entries), default=0), 40)
    for e in entries:
        style = "dim" if e.origin.kind == "default" else "cyan" if e.origin.kind == "override" else "green"
        console.print(f"{escape(e.path.ljust(key_width))}  {escape(e.text.ljust(value_width))}  "
                      f"[{style}]{escape(str(e.origin))}[/{style}]")


def write_yaml(document: dict, target: str) -> None:
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)
    if target == "-":
        sys.stdout.write(text)
        return
    try:
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write '{target}': {exc.strerror}") from None
