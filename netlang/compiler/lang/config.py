"""A whole validated config: the top level and the command blocks, and its plain forms.

`Config(record, path)` validates the top level of an evaluated file (`compiler.graph.load_config`
evaluates and validates one); `Config.actions()` validates and returns the blocks named by
`command`, in order, with the schemas of blocks.py. `resolved_config_dict` (the trainer's
config.resolved.yaml) and `config_entries` (`netlang check` / `netlang explain`) list every
effective value with where it came from.
"""
from __future__ import annotations

from dataclasses import dataclass

from netlang.compiler.lang import values
from netlang.compiler.lang.blocks import ACTION_SCHEMA, TOP_SCHEMA, ActionView
from netlang.compiler.lang.fields import Origin, Unsupported, is_plain
from netlang.compiler.lang.plain import format_plain, to_plain
from netlang.compiler.lang.views import ValidationContext, View, own_names, referenced_names, validate
from netlang.errors import SchemaError, suggest
from netlang.grammar import ast
from netlang.grammar.legacy import is_legacy_config


class Config:
    """A validated config: `top` (the top-level settings) and `actions()` (the command blocks)."""

    def __init__(self, record, path: str = "", overrides=()):
        self.record = record
        self.path = path
        self.overrides = tuple(overrides)
        self.context = ValidationContext(referenced_names(record) | _command_words(record), record,
                                         legacy=is_legacy_config(path))
        self.top = validate(record, TOP_SCHEMA, context=self.context)
        self._actions: list | None = None

    @property
    def warnings(self) -> list:
        """The warnings validation gave so far (ConfigWarnings; `.cntk` files only)."""
        return list(self.context.warnings)

    def actions(self) -> list[tuple[str, ActionView]]:
        """The blocks named by `command`, in order, each validated."""
        if self._actions is None:
            self._actions = [(name, self._action(name, span)) for name, span in self._commands()]
        return list(self._actions)

    def explained_actions(self) -> list[tuple[str, ActionView]]:
        """The blocks named by `command`, or none for a file of values alone (no `command` and no
        `train` block, which the default command would run): such a file can be explained, not run."""
        if not self.top.given("command") and self.record.find_ci("train") is None:
            return []
        return self.actions()

    def action(self, name: str) -> ActionView:
        for action_name, view in self.actions():
            if action_name.lower() == name.lower():
                return view
        raise KeyError(name)

    def is_library(self) -> bool:
        """A file of definitions only (e.g. a Macros.bs that configs include): no `command`, no block of
        CNTK's default command `train`, and no other block with an `action`."""
        if self.top.given("command") or self.record.find_ci("train") is not None:
            return False
        return not any(_is_action_block(self.record.expr_of(n)) for n in own_names(self.record))

    def _commands(self):
        names = self.top.command
        spans = getattr(names, "spans", [None] * len(names))
        return [(name, span or self.top.span_of("command")) for name, span in zip(names, spans)]

    def _action(self, name: str, span) -> ActionView:
        member = self.record.find_ci(name)
        if member is None or self.record.origin_of(member) == "stdlib":
            hint = suggest(name, self._block_names())
            raise SchemaError(f"unknown command '{name}' — no block of that name"
                              + (f" ({hint})" if hint else ""), span, key="command",
                              hint=None if hint else f"define {name} = {{ action = \"...\" ; ... }}")
        block = self.record.get(member)
        if not isinstance(block, values.Record):
            raise SchemaError(f"command '{name}' names '{member}', which is not a block", span, key="command",
                              hint=f"{member} must be a block {{ action = \"...\" ; ... }}")
        return validate(block, ACTION_SCHEMA, member, span=self.record.span_of(member),
                        origin=None, context=self.context)

    def _block_names(self) -> list[str]:
        return [n for n in own_names(self.record) if isinstance(self.record.expr_of(n), ast.Record)]

    def variables(self, view: View | None = None) -> dict:
        """The user's own plain-valued variables of a block (top level by default), evaluated."""
        view = view or self.top
        out = {}
        for name in view.user_names:
            thunk = view.record.thunk_of(name)
            if is_plain(thunk.expr, thunk.scope, {name}):
                out[name] = to_plain(view.record.get(name))
        return out


def _is_action_block(expr) -> bool:
    return isinstance(expr, ast.Record) and any(m.name.lower() == "action" for m in expr.members)


def _command_words(record) -> set:
    """Block names in a `command` written as a string ("train:test"), which refer to blocks too."""
    member = record.find_ci("command")
    if member is None or not isinstance(record.expr_of(member), (ast.String, ast.Interp)):
        return set()
    value = record.get(member)
    return {word.strip() for word in value.split(":")} if isinstance(value, str) else set()


def resolved_config_dict(config: Config) -> dict:
    """The whole resolved configuration in plain form: every effective value (schema defaults
    included) plus the user's variables, top level and each command block. The trainer saves it."""
    top = {**config.top.to_dict(), **config.variables()}
    actions = {}
    for name, view in config.explained_actions():
        actions[name] = {**view.to_dict(), **config.variables(view)}
    return {"config": top, "actions": actions}


@dataclass
class Entry:
    """One effective value for check/explain: key path, plain value, human text, origin."""

    path: str
    value: object
    text: str
    origin: Origin


def config_entries(config: Config) -> list[Entry]:
    """Every effective value of the config, top level first, then each command block; schema
    defaults included, the user's plain variables after each block's settings."""
    out = block_entries(config, config.top, "")
    for name, view in config.explained_actions():
        out += block_entries(config, view, name)
    return out


def block_entries(config: Config, view: View, prefix: str) -> list[Entry]:
    """The effective values of one block (top level or a command block), paths starting at `prefix`."""
    out = []
    for path, f, value, origin in view.walk(prefix):
        if isinstance(f.type, Unsupported):
            continue
        plain = None if value is None else f.type.plain(value)
        text = (f.unset_text or "(none)") if value is None else f.type.text(value)
        out.append(Entry(path, plain, text, origin))
    for name, value in config.variables(view).items():
        origin = Origin(view.record.origin_of(name), view.record.span_of(name))
        out.append(Entry(f"{prefix}.{name}" if prefix else name, value, format_plain(value), origin))
    return out
