"""`netlang explain cfg.net [key.path ...] [key=value ...] [--json] [--yaml FILE|-] [--schedule]`.

Every effective value, schema defaults included, with where it came from: `default`, the
`file:line:col` that sets it, `include file:line:col`, or `override` (command line). Values found in
an enclosing block (CNTK's parent lookup) say so: `cfg.net:12:1 (from top level)`. Key paths select
a block or a key (`train.SGD`, `train.SGD.maxEpochs`, case-insensitive). `--yaml` writes the resolved
configuration (`netlang.compiler.lang.config.resolved_config_dict`) as YAML, the file the trainer keeps per run.

Any config can be explained, also one that defines values only (no command block). A key path that
is no setting names a value of the user's own, which is evaluated then, and only then: a computed
value (`g = f(10)`), a record (its members; those that are computations show how to ask for them),
a network node (`train.network.h`: its op, shape and inputs; its network is built to infer the
shape). Nothing nobody asked for is evaluated, so explaining a value never builds a network.

`--schedule` prints what the learner will use in each epoch of the train actions (or of those the
key paths name): the minibatch size, the learning rate per sample and per minibatch, the momentum
per minibatch and as a time constant, and the dropout rate.
"""
from __future__ import annotations

import json
import sys

import yaml
from rich.markup import escape
from rich.table import Table

from netlang.actions.output import stdout_console
from netlang.compiler.graph import load_config
from netlang.compiler.graph.network import build_action_network
from netlang.compiler.lang import values
from netlang.compiler.lang.config import Entry, config_entries, resolved_config_dict
from netlang.compiler.lang.fields import Origin, is_plain
from netlang.compiler.lang.plain import format_plain, kind_of, to_plain
from netlang.compiler.lang.settings import sgd_settings
from netlang.errors import ConfigError, UsageError, suggest
from netlang.ir.graph import Node, layout_suffix
from netlang.ir.shapes import format_shape
from netlang.runtime.schedules import LearningRateSchedule, MomentumSchedule


def run(args) -> int:
    config = load_config(args.config, args.overrides)
    if args.yaml:
        write_yaml(resolved_config_dict(config), args.yaml)
        return 0
    if args.schedule:
        return explain_schedules(config, args)
    entries = config_entries(config)
    selected = select(entries, args.key_paths, config)
    if args.json:
        document = {e.path: {"value": e.value, "origin": str(e.origin)} for e in selected}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    print_entries(selected, stdout_console(args))
    return 0


def select(entries: list[Entry], keys: list[str], config=None) -> list[Entry]:
    """The entries under the given key paths (all when none); a path that is no setting is a value of
    the user's own, evaluated now; one that names nothing is a usage error."""
    if not keys:
        return entries
    chosen = []
    for key in keys:
        wanted = key.lower()
        matches = [e for e in entries if _under(e.path.lower(), wanted)]
        if not matches and config is not None:
            matches = user_value_entries(config, key, entries)
        chosen += [e for e in matches if e not in chosen]
    return chosen


def _under(path: str, key: str) -> bool:
    return path == key or path.startswith(key + ".") or path.startswith(key + "[")


# ---- values of the user's own, on request ------------------------------------------------------------

def user_value_entries(config, key: str, entries: list[Entry]) -> list[Entry]:
    """The value at `key` (dotted member names, `[i]` for array elements), evaluated now, as entries:
    one for a plain value, a function or a node; one per member for a record or an array."""
    value, owner, member = _walk(config, key, entries)
    origin = Origin(owner.origin_of(member), owner.span_of(member)) if member is not None else Origin("file")
    if isinstance(value, Node):
        return [_node_entry(config, key, value, origin)]
    if isinstance(value, values.Record):
        return [_member_entry(value, name, f"{key}.{name}") for name in value.names()] or \
            [Entry(key, {}, "{ } (empty record)", origin)]
    if isinstance(value, values.Array):
        return [Entry(f"{key}[{i}]", to_plain(item), _text(item), origin) for i, item in enumerate(value.items())]
    return [Entry(key, to_plain(value), _text(value), origin)]


def _walk(config, key: str, entries: list[Entry]):
    """(value, record holding the last member, that member's name) of a dotted key path."""
    current, owner, member = config.record, None, None
    walked = []
    for part in _parts(key):
        if isinstance(part, int):
            if not isinstance(current, values.Array) or not 0 <= part < len(current.items()):
                raise _no_value(key, ".".join(walked), entries)
            current, owner, member = current.items()[part], None, None
            walked.append(f"[{part}]")
            continue
        found = current.find_ci(part) if isinstance(current, values.Record) else None
        if found is None:
            raise _no_value(key, ".".join(walked), entries, current)
        owner, member = current, found
        current = current.get(found)
        walked.append(found)
    return current, owner, member


def _parts(key: str) -> list:
    parts = []
    for word in key.split("."):
        name, _, rest = word.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            parts.append(int(index) if index.isdigit() else index)
            rest = rest.lstrip("[")
    return parts


def _no_value(key: str, within: str, entries: list[Entry], record=None) -> UsageError:
    names = [e.path for e in entries]
    if isinstance(record, values.Record):
        names += [f"{within}.{n}" if within else n for n in record.names()]
    hint = suggest(key, names)
    return UsageError(f"no setting or value '{key}' in this config",
                      hint=hint or "run netlang explain without key paths to list every setting")


def _member_entry(record, name: str, path: str) -> Entry:
    """A member of a record asked for: evaluated when it is a plain value, else described."""
    origin = Origin(record.origin_of(name), record.span_of(name))
    thunk = record.thunk_of(name)
    if thunk.expr is None or is_plain(thunk.expr, thunk.scope, {name}):
        value = record.get(name)
        return Entry(path, to_plain(value), _text(value), origin)
    return Entry(path, None, f"(computed; netlang explain … {path})", origin)


def _node_entry(config, key: str, node: Node, origin: Origin) -> Entry:
    """A node, with the shape its network's inference gives it when the path is an action's network."""
    action = _action_of_network_path(config, key)
    if action is not None:
        build_action_network(action.network_expr())        # infers the shapes of its nodes in place
    inputs = ", ".join(i.name for i in node.inputs) or "none"
    text = (f"{node.op} node {format_shape(node.shape, layout_suffix(node.layout))} "
            f"(name {node.name}; inputs {inputs})")
    return Entry(key, {"op": node.op, "name": node.name, "shape": list(node.shape),
                       "inputs": [i.name for i in node.inputs]}, text, Origin("file", node.span) if node.span else origin)


def _action_of_network_path(config, key: str):
    parts = _parts(key)
    if len(parts) < 3 or not isinstance(parts[1], str) or parts[1].lower() != "network":
        return None
    for name, view in config.explained_actions():
        if name.lower() == str(parts[0]).lower() and view.network_expr() is not None:
            return view
    return None


def _text(value) -> str:
    if isinstance(value, values.Lambda):
        return f"function ({', '.join(value.params)})"
    if isinstance(value, values.Record):
        return f"{{ {', '.join(value.names())} }}"
    plain = to_plain(value)
    if isinstance(plain, str) and plain.startswith("<"):
        return kind_of(value)
    return format_plain(plain)


# ---- the learner's schedule -----------------------------------------------------------------------

def explain_schedules(config, args) -> int:
    trains = [(name, view) for name, view in config.explained_actions() if view.SGD is not None]
    if args.key_paths:
        wanted = {str(_parts(key)[0]).lower() for key in args.key_paths}
        trains = [(name, view) for name, view in trains if name.lower() in wanted]
    if not trains:
        raise UsageError("no train action with an SGD block " + ("among " + ", ".join(args.key_paths)
                                                                 if args.key_paths else "in command = …"),
                         hint="name the train action: netlang explain cfg.net train.SGD --schedule")
    schedules = {f"{name}.SGD": epoch_schedule(view.SGD) for name, view in trains}
    if args.json:
        sys.stdout.write(json.dumps(schedules, indent=2) + "\n")
        return 0
    console = stdout_console(args)
    for path, rows in schedules.items():
        print_schedule(path, rows, console)
    return 0


def epoch_schedule(sgd) -> list[dict]:
    """One row per epoch: what the learner uses, in every unit a user may think in."""
    settings = sgd_settings(sgd)
    try:
        learning_rate = LearningRateSchedule.of(settings)
    except ValueError:
        raise ConfigError("no learning rate schedule to show (autoAdjustLR = searchBeforeEpoch searches it)",
                          sgd.span, key=sgd.path) from None
    momentum = MomentumSchedule.of(settings)
    rows = []
    for epoch in range(1, sgd.maxEpochs + 1):
        size = int(settings.minibatch_size.value(epoch))
        rows.append({"epoch": epoch, "minibatchSize": size,
                     "learningRatePerSample": learning_rate.per_sample(epoch),
                     "learningRatePerMinibatch": learning_rate.per_sample(epoch) * size,
                     "momentumPerMinibatch": momentum.per_minibatch(epoch, size),
                     "momentumTimeConstant": momentum.time_constant(epoch),
                     "dropoutRate": float(sgd.dropoutRate.value(epoch))})
    return rows


SCHEDULE_COLUMNS = (("minibatchSize", "minibatch size", "{:d}"), ("learningRatePerSample", "lr per sample", "{:.6g}"),
                    ("learningRatePerMinibatch", "lr per minibatch", "{:.6g}"),
                    ("momentumPerMinibatch", "momentum per minibatch", "{:.6g}"),
                    ("momentumTimeConstant", "momentum time constant", "{:.6g}"), ("dropoutRate", "dropout", "{:.6g}"))


def print_schedule(path: str, rows: list[dict], console) -> None:
    """A table with one line per run of epochs whose values are all equal."""
    table = Table(title=f"{path}: {len(rows)} epochs", title_justify="left", show_edge=False)
    table.add_column("epochs")
    for _, title, _ in SCHEDULE_COLUMNS:
        table.add_column(title, justify="right")
    start = 0
    for end in range(1, len(rows) + 1):
        if end < len(rows) and _same(rows[end], rows[start]):
            continue
        first, last = rows[start]["epoch"], rows[end - 1]["epoch"]
        table.add_row(str(first) if first == last else f"{first}-{last}",
                      *(fmt.format(rows[start][key]) for key, _, fmt in SCHEDULE_COLUMNS))
        start = end
    if not console.is_terminal:
        console.width = 200      # in a log or a pipe the table keeps its width
    console.print(table)
    console.print("time constant: samples over which momentum decays by 1/e (0: no momentum)", markup=False)


def _same(a: dict, b: dict) -> bool:
    return all(a[key] == b[key] for key, _, _ in SCHEDULE_COLUMNS)


# ---- printing --------------------------------------------------------------------------------------

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
