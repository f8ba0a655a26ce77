"""Validation: an evaluated config record read against a schema, as a typed `View`.

`validate(record, schema, ...)` reads every field of the schema from the record (see values.py)
and returns a `View`: typed attribute access plus, for each field, where its value came from.

Unknown keys: a closed block (SGD, a reader, a stream) rejects any key that is not in its schema, with
a "did you mean". An open block (the top level, an action block) also holds the user's own variables,
so there a non-schema key is an error only when nothing in the config references it and it is a near
miss of a setting. A legacy `.cntk` config follows CNTK's policy instead: CNTK ignores keys it does not
read, so there such a key is a warning (file:line:col, "did you mean"), and validation goes on.
A key missing in a block may be found in the enclosing blocks (CNTK's parent lookup) when its field
inherits.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from netlang.compiler.lang import values
from netlang.compiler.lang.fields import DEFAULT, FieldType, Origin, Slot
from netlang.compiler.lang.plain import describe_value
from netlang.compiler.lang.schema import REQUIRED, Field, Schema
from netlang.errors import ConfigWarning, SchemaError, Span, format_error, suggest
from netlang.grammar import ast


def own_names(record) -> list[str]:
    """The record's members as written in the config (not the standard library's)."""
    return [name for name in record.names() if record.origin_of(name) != "stdlib"]


def ancestors(record):
    """The enclosing records of `record`, innermost first."""
    parent = record.parent
    while parent is not None:
        yield parent
        parent = parent.parent


log = logging.getLogger("netlang.config")


def log_warning(warning: ConfigWarning) -> None:
    log.warning("%s", format_error(warning, with_kind=True))


@dataclass
class ValidationContext:
    """What open blocks need to tell a user variable from a typo: every name the config refers to.
    `legacy`: the config is a `.cntk` file, where an unknown key is a warning (`on_warning` gets it,
    once), not an error."""

    referenced: set = field(default_factory=set)
    top_record: Any = None
    legacy: bool = False
    warnings: list = field(default_factory=list)
    on_warning: Callable[[ConfigWarning], None] = log_warning

    def is_referenced(self, name: str) -> bool:
        return name in self.referenced

    def warn(self, warning: ConfigWarning) -> None:
        if any(w.span == warning.span and w.message == warning.message for w in self.warnings):
            return
        self.warnings.append(warning)
        self.on_warning(warning)


class View:
    """Typed access to a validated block: `view.maxEpochs`, `view["maxepochs"]`, `view.origin(key)`.

    Attribute access is by key (any case or alias); a key that collides with a View method or
    property (`path`, `span`, `items`, ...) is read with `view["key"]`."""

    def __init__(self, schema: Schema, record, path: str, span: Span | None, origin: Origin | None):
        self._schema = schema
        self._record = record
        self._path = path
        self._span = span
        self._block_origin = origin
        self._values: dict[str, Any] = {}
        self._origins: dict[str, Origin] = {}
        self._members: dict[str, str] = {}       # canonical field name -> member name in the record
        self._user_names: list[str] = []         # open blocks: the user's own variables
        self._extra_blocks: dict[str, View] = {}  # closed blocks with extra_blocks (legacy streams)
        self._context: ValidationContext | None = None

    # --- typed access
    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        f = self._schema.field(name)
        if f is None:
            raise AttributeError(f"{self._schema.name} has no setting '{name}'")
        return self._values[f.name]

    def __getitem__(self, name: str):
        f = self._schema.field(name)
        if f is None:
            raise KeyError(name)
        return self._values[f.name]

    def get(self, name: str, default=None):
        f = self._schema.field(name)
        return self._values.get(f.name, default) if f else default

    def origin(self, name: str) -> Origin:
        return self._origins[self._schema.field(name).name]

    def given(self, name: str) -> bool:
        """Whether the config sets this key (in the block or an enclosing one), i.e. it is no default."""
        return self.origin(name).kind not in ("default", "derived")

    def span_of(self, name: str) -> Span | None:
        origin = self.origin(name)
        return origin.span or self._span

    def member_name(self, name: str) -> str | None:
        """The key as the user spelled it in this block (None for defaults and inherited values)."""
        return self._members.get(self._schema.field(name).name)

    @property
    def schema(self) -> Schema:
        return self._schema

    @property
    def record(self):
        return self._record

    @property
    def path(self) -> str:
        return self._path

    @property
    def span(self) -> Span | None:
        return self._span

    @property
    def context(self) -> "ValidationContext | None":
        """The validation context of the config this block belongs to."""
        return self._context

    @property
    def user_names(self) -> list[str]:
        return list(self._user_names)

    @property
    def extra_blocks(self) -> dict:
        return dict(self._extra_blocks)

    def items(self):
        """(field, value, origin) for every field, in schema order."""
        for f in self._schema.fields:
            yield f, self._values[f.name], self._origins[f.name]

    def key_path(self, name: str) -> str:
        return _join(self._path, self._members.get(name, name))

    def error(self, name: str, message: str, hint: str | None = None) -> SchemaError:
        """An error about field `name`, at its span (or the block's when it was not given)."""
        f = self._schema.field(name)
        return SchemaError(message, self.span_of(name), hint=hint, key=self.key_path(f.name))

    def block_error(self, message: str, hint: str | None = None) -> SchemaError:
        return SchemaError(message, self._span, hint=hint, key=self._path or None)

    def set_derived(self, name: str, value, kind: str = "derived") -> None:
        """Fill in a value that follows from other settings (a check's job, e.g. default momentum);
        `kind="default"` for a default that depends on the block (an action's minibatch size)."""
        f = self._schema.field(name)
        self._values[f.name] = f.type.from_default(value)
        self._origins[f.name] = DEFAULT if kind == "default" else Origin(kind)

    def to_dict(self) -> dict:
        """Every effective value in plain (JSON/YAML) form; keys that are unset and have no default
        are left out."""
        out = {}
        for f, value, _ in self.items():
            if value is not None:
                out[f.name] = f.type.plain(value)
        for name, view in self._extra_blocks.items():
            out[name] = view.to_dict()
        return out

    def to_plain(self) -> dict:
        return self.to_dict()

    def walk(self, prefix: str | None = None):
        """(key path, field, value, origin) for every leaf setting, nested blocks flattened.
        Paths use the user's spelling of keys and start at `prefix` (default: the view's path)."""
        prefix = self._path if prefix is None else prefix
        for path, f, value, origin in self._walk_own(prefix):
            yield path, f, value, self._as_inherited(origin)

    def _walk_own(self, prefix: str):
        for f, value, origin in self.items():
            path = _join(prefix, self._members.get(f.name, f.name))
            yield from _walk_value(path, f, value, origin)
        for name, view in self._extra_blocks.items():
            yield from view.walk(_join(prefix, name))

    def _as_inherited(self, origin: Origin) -> Origin:
        # The values inside a block found in an enclosing block are inherited too.
        block = self._block_origin
        if block is None or block.inherited_from is None or origin.inherited_from is not None:
            return origin
        if origin.kind in ("default", "derived"):
            return origin
        return Origin(origin.kind, origin.span, block.inherited_from)

    def __repr__(self) -> str:
        return f"<View {self._schema.name} at {self._path or 'top level'}>"


def _walk_value(path: str, f: Field, value, origin: Origin):
    if isinstance(value, View):
        yield from value.walk(path)
    elif isinstance(f.type, RecordOf) and value is not None:
        for name, view in value.items():
            yield from view.walk(f"{path}.{name}")
    elif isinstance(f.type, BlockList) and value is not None:
        for i, view in enumerate(value):
            yield from view.walk(f"{path}[{i}]")
    else:
        yield path, f, value, origin


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validate(record, schema: Schema, path: str = "", span: Span | None = None,
             origin: Origin | None = None, context: ValidationContext | None = None,
             view_class: type = None) -> View:
    """Read every field of `schema` from `record`, reject unknown keys, run the checks."""
    if context is None:  # validating a record on its own: it is the top of its config
        context = ValidationContext(referenced_names(record), record)
    view = (view_class or schema.view_class or View)(schema, record, path, span, origin)
    view._context = context
    members = _match_members(record, schema, path, context)
    _check_unknown_keys(view, record, members, context)  # first: a typo explains a missing key
    for f in schema.fields:
        _read_field(view, f, members.get(f.name), record, path, context)
    for check in schema.checks:
        check(view)
    return view


def defaults(schema: Schema, path: str, span: Span | None = None) -> View:
    """The view of a block the config does not give: every field at its default (e.g. `ParallelTrain`
    when only `parallelTrain = true` is set), so a block's defaults are read from its schema alone."""
    view = (schema.view_class or View)(schema, None, path, span, None)
    for f in schema.fields:
        if f.default is REQUIRED:
            raise SchemaError(f"missing required key '{f.name}' in {schema.name}", span, key=_join(path, f.name),
                              hint=f"add a {path} block with {f.name} = ...")
        view._values[f.name] = f.type.from_default(f.default)
        view._origins[f.name] = DEFAULT
    return view


def _match_members(record, schema: Schema, path: str, context: ValidationContext) -> dict[str, str]:
    """Canonical field name -> the record member that sets it; two spellings of one key are an error
    (in a `.cntk` file a warning, and the later one counts: CNTK reads each spelling on its own)."""
    members: dict[str, str] = {}
    for name in own_names(record):
        f = schema.field(name)
        if f is None:
            continue
        if f.name in members:
            first = members[f.name]
            message = f"'{name}' and '{first}' are the same setting, given twice"
            hint = (f"keep one of them (keys are case-insensitive; aliases of '{f.name}': "
                    f"{', '.join(f.aliases) or 'none'})")
            if not context.legacy:
                raise SchemaError(message, record.span_of(name), key=_join(path, name), hint=hint)
            context.warn(ConfigWarning(f"{message}; netlang uses '{name}'", record.span_of(name),
                                       key=_join(path, name), hint=hint))
        members[f.name] = name
    return members


def _read_field(view: View, f: Field, member: str | None, record, path: str,
                context: ValidationContext) -> None:
    if member:
        slot = Slot(record, member, _join(path, member), context)
    else:
        slot = _inherited_slot(f, record, path, context)
    if slot is None or _says_default(slot):
        if f.default is REQUIRED:
            raise SchemaError(f"missing required key '{f.name}' in {view.schema.name}", view.span,
                              key=_join(path, f.name), hint=f"add {f.name} = ... to the {view.schema.name} block")
        view._values[f.name] = f.type.from_default(f.default)
        view._origins[f.name] = DEFAULT
        return
    view._values[f.name] = f.type.read(slot)
    view._origins[f.name] = slot.origin()
    if member:
        view._members[f.name] = member


def _says_default(slot: Slot) -> bool:
    """CNTK: a value equal to the string `default` means the built-in default."""
    expr = slot.expr()
    return isinstance(expr, ast.String) and expr.value.strip().lower() == "default"


def _inherited_slot(f: Field, record, path: str, context: ValidationContext) -> Slot | None:
    """CNTK's parent lookup: a key missing in a block is searched in the enclosing blocks, up to the
    top level of the file (not into the standard library)."""
    if not f.inherit or record is context.top_record:
        return None
    parts = path.split(".") if path else []
    for depth, parent in enumerate(ancestors(record), start=1):
        for name in own_names(parent):
            if parent_matches(f, name):
                owner = ".".join(parts[:-depth]) if depth <= len(parts) else ""
                return Slot(parent, name, _join(owner, name), context, inherited_from=owner)
        if parent is context.top_record:
            break
    return None


def parent_matches(f: Field, name: str) -> bool:
    return name.lower() in (k.lower() for k in f.keys())


def _check_unknown_keys(view: View, record, members: dict, context: ValidationContext) -> None:
    schema = view.schema
    known = set(members.values())
    also = {k.lower() for k in schema.also_known()} if schema.also_known else set()
    for name in own_names(record):
        if name in known or name.lower() in also or schema.field(name) is not None:
            continue
        if schema.closed:
            if schema.extra_blocks is not None and _is_record_member(record, name):
                view._extra_blocks[name] = Block(schema.extra_blocks).read(
                    Slot(record, name, _join(view.path, name), context))
                continue
            _unknown_key(context, f"unknown key '{name}' in {schema.name}", record.span_of(name),
                         _join(view.path, name), _key_hint(name, schema))
            continue
        near = suggest(name, [k for f in schema.fields for k in f.keys()])
        if context.is_referenced(name) or _is_unrun_action_block(view, record, name) or near is None:
            # A variable of the user's own: used by name or as $name$, or at least not a near miss
            # of a setting (CNTK configs carry such spare variables, e.g. imageLayout = "cudnn").
            view._user_names.append(name)
            continue
        where = f" in {view.path}" if view.path else ""
        _unknown_key(context, f"unknown key '{name}'{where} (not a setting and never used)", record.span_of(name),
                     _join(view.path, name), _key_hint(name, schema))
        if context.legacy:
            view._user_names.append(name)


def _unknown_key(context: ValidationContext, message: str, span: Span | None, key: str, hint: str) -> None:
    """An error in a `.net` file; in a `.cntk` file a warning, since CNTK ignores keys it does not read."""
    if not context.legacy:
        raise SchemaError(message, span, key=key, hint=hint)
    context.warn(ConfigWarning(message + " — CNTK ignores it, and so does netlang", span, key=key, hint=hint))


def _key_hint(name: str, schema: Schema) -> str:
    keys = [k for f in schema.fields for k in f.keys()]
    return suggest(name, keys) or f"see `netlang explain` for the keys of {schema.name}"


def _is_record_member(record, name: str) -> bool:
    return isinstance(record.expr_of(name), ast.Record)


def _is_unrun_action_block(view: View, record, name: str) -> bool:
    """At the top level, a block that looks like a command block (`write = { action = "write" ... }`)
    need not be referenced: `command=write` on the command line may run it later."""
    if view.path or not _is_record_member(record, name):
        return False
    if view.schema.command_block_keys is None:
        return False
    keys = {m.name.lower() for m in record.expr_of(name).members}
    return bool(keys & {k.lower() for k in view.schema.command_block_keys()})


def referenced_names(record) -> set[str]:
    """Every name the config's source refers to: identifiers, `$name$` interpolations (and the `$name$`
    a legacy config substituted, kept on its members), `.member`."""
    names: set[str] = set()
    for member in own_names(record):
        definition = record.definition(member)
        if definition is None:
            continue
        for node in ast.walk(definition):
            if isinstance(node, ast.Ident):
                names.add(node.name)
            elif isinstance(node, ast.Dot):
                names.add(node.name)
    return names


# ---- nested blocks -----------------------------------------------------------------------------

class Block(FieldType):
    """A nested record validated with its own schema; the value is a `View`."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.label = f"{schema.name} block"

    def read(self, slot):
        value = slot.value()
        if not _is_record(value):
            raise slot.error(f"{slot.name} must be a block {{ ... }}, got {describe_value(value)}")
        return validate(value, self.schema, slot.path, span=slot.span(), origin=slot.origin(),
                        context=slot.context)

    def plain(self, value):
        return value.to_dict()

    def text(self, value) -> str:
        return "{ ... }"


class RecordOf(FieldType):
    """A record whose members are named by the user and each validated with one schema
    (a reader's `input = { features = {...} ; labels = {...} }`). The value is a dict name -> View."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.label = f"record of {schema.name} blocks"

    def read(self, slot):
        value = slot.value()
        if not _is_record(value):
            raise slot.error(f"{slot.name} must be a block {{ name = {{ ... }} ; ... }}, got {describe_value(value)}")
        views = {}
        for name in own_names(value):
            member = slot.child(value, name, f"{slot.path}.{name}")
            views[name] = Block(self.schema).read(member)
        return views

    def plain(self, value):
        return {name: view.to_dict() for name, view in value.items()}

    def text(self, value) -> str:
        return ":".join(value)


class BlockList(FieldType):
    """An array of blocks (`deserializers = ( {...} : {...} )`); one block alone is a list of one."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.label = f"list of {schema.name} blocks"

    def read(self, slot):
        value = slot.value()
        records = list(value.items()) if _is_array(value) else [value]
        views = []
        for i, record in enumerate(records):
            path = f"{slot.path}[{i}]" if _is_array(value) else slot.path
            if not _is_record(record):
                raise slot.error(f"{path} must be a block {{ ... }}, got {describe_value(record)}")
            views.append(validate(record, self.schema, path, span=record.span or slot.span(),
                                  origin=slot.origin(), context=slot.context))
        return views

    def plain(self, value):
        return [view.to_dict() for view in value]

    def text(self, value) -> str:
        return f"{len(value)} block(s)"


def _is_array(value) -> bool:
    return isinstance(value, values.Array)


def _is_record(value) -> bool:
    return isinstance(value, values.Record)
