"""Typed, validated views of config records.

A `Schema` is a list of `Field`s; `validate(record, schema, ...)` reads every field of an evaluated
config record (see `compiler/values.py`) and returns a `View`: typed attribute access plus, for each
field, where its value came from. CNTK's config keys are case-insensitive and a few have legacy
aliases, so key matching ignores case and treats aliases as the same key.

Some field types read the *unevaluated* expression of a member, as CNTK's string-based config layer
does: `command = train:test` names blocks although `train` evaluates to a record, and
`learningRatesPerMB = 0.01*2:0.005` is a schedule, not a product. Everything else is read from the
evaluated value.

Unknown keys: a closed block (SGD, a reader, a stream) rejects any key that is not in its schema, with
a "did you mean". An open block (the top level, an action block) also holds the user's own variables,
so there a non-schema key is an error only when nothing in the config references it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from netlang import sources
from netlang.compiler.lang import values
from netlang.compiler.lang.evaluator import evaluate
from netlang.errors import SchemaError, Span, suggest
from netlang.grammar import ast


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # a Field default meaning "the user must give this key"


# ---- where a value came from -------------------------------------------------------------------

@dataclass(frozen=True)
class Origin:
    """Where an effective value came from: `default`, the file, an include, or a command-line override."""

    kind: str                     # "default" | "file" | "include" | "override" | "stdlib" | "derived"
    span: Span | None = None
    inherited_from: str | None = None  # key path of the ancestor block the value was found in

    def __str__(self) -> str:
        if self.kind in ("default", "derived"):
            text = self.kind
        elif self.kind == "override":
            text = "override"
        elif self.kind == "include":
            text = f"include {self.span}" if self.span else "include"
        else:
            text = str(self.span) if self.span else self.kind
        if self.inherited_from is not None:
            text += f" (from {self.inherited_from or 'top level'})"
        return text


DEFAULT = Origin("default")


# ---- one member of a record, as a field type sees it -------------------------------------------

class Slot:
    """One member of a config record: its value (forced on demand), expression, scope, span, origin."""

    def __init__(self, record, name: str, path: str, context: "ValidationContext",
                 inherited_from: str | None = None):
        self.record = record
        self.name = name
        self.path = path
        self.context = context
        self.inherited_from = inherited_from

    def child(self, record, name: str, path: str) -> "Slot":
        return Slot(record, name, path, self.context)

    def value(self):
        return self.record.get(self.name)

    def expr(self):
        return self.record.expr_of(self.name)

    def scope(self):
        return self.record.scope_of(self.name)

    def span(self) -> Span | None:
        return self.record.span_of(self.name)

    def origin(self) -> Origin:
        kind = self.record.origin_of(self.name)
        return Origin(kind, self.span(), self.inherited_from)

    def error(self, message: str, hint: str | None = None, span: Span | None = None) -> SchemaError:
        return SchemaError(message, span or self.span(), hint=hint, key=self.path)

    def lookup(self, name: str):
        """The value of `name` seen from this member's scope when it is a plain variable; None when
        `name` is undefined or not plain (a block, a function, a network), which is not evaluated."""
        scope = self.scope()
        thunk = scope.lookup(name) if scope is not None else None
        if thunk is None or not is_plain(thunk.expr, thunk.scope, {name}):
            return None
        return thunk.force()


# Expressions that only compute plain values; anything else (calls, records, functions) may build
# network nodes, so the schema never evaluates it just to look at it.
_PLAIN_NODES = (ast.Number, ast.String, ast.Interp, ast.Bool, ast.Ident, ast.BinOp, ast.UnaryOp,
                ast.ArrayLit, ast.FSharpArray, ast.If, ast.Index)


def is_plain(expr, scope, seen: set | None = None) -> bool:
    """Whether `expr` computes a plain value: plain operators over literals and over variables that
    are plain themselves, followed without evaluating anything. An unknown name counts as plain, so
    that evaluating it reports the error."""
    if expr is None:
        return False
    seen = set() if seen is None else seen
    for node in ast.walk(expr):
        if not isinstance(node, _PLAIN_NODES):
            return False
        if isinstance(node, ast.Ident) and node.name not in seen:
            seen.add(node.name)
            thunk = scope.lookup(node.name) if scope is not None else None
            if thunk is not None and not is_plain(thunk.expr, thunk.scope, seen):
                return False
    return True


# ---- field types -------------------------------------------------------------------------------

def _describe(value) -> str:
    """A short phrase for an unexpected value in an error message."""
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"the number {_format_number(value)}"
    if isinstance(value, str):
        return f'the string "{value}"'
    return _kind_of(value)


def _kind_of(value) -> str:
    name = values.type_name(value)
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _format_number(value) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "infinity" if value > 0 else "-infinity"
    if isinstance(value, float) and abs(value) < 1e15 and value == int(value):   # NaN fails the first test
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_array(value) -> bool:
    return isinstance(value, values.Array)


def _is_record(value) -> bool:
    return isinstance(value, values.Record)


_INFINITY_WORDS = {"#inf", "1#inf", "inf", "infinity", "+inf", "+infinity"}


def parse_float_text(text: str) -> float | None:
    """A number written as CNTK's config layer reads it (strtod plus `1#INF`/`#INF`), or None."""
    word = text.strip().lower()
    if word in _INFINITY_WORDS:
        return math.inf
    if word.startswith("-") and word[1:] in _INFINITY_WORDS:
        return -math.inf
    try:
        return float(word)
    except ValueError:
        return None


class FieldType:
    """How one kind of setting is read and checked. Subclasses override `convert` (from a value)
    or `read` (from the member, when the unevaluated expression matters)."""

    label = "value"

    def read(self, slot: Slot):
        return self.convert(slot.value(), slot)

    def convert(self, value, slot: Slot):
        return value

    def from_default(self, value):
        """The typed form of a Python default written in a schema."""
        return value

    def plain(self, value):
        """A JSON/YAML-friendly form of a typed value."""
        return to_plain(value)

    def text(self, value) -> str:
        """A short human form of a typed value (check/explain output)."""
        return format_plain(self.plain(value))


class AnyValue(FieldType):
    label = "any value"


class Int(FieldType):
    label = "whole number"

    def __init__(self, min: int | None = None, max: int | None = None):
        self.min, self.max = min, max

    def convert(self, value, slot):
        number = value
        if isinstance(value, str):
            number = parse_float_text(value)
        if not _is_number(number) or not math.isfinite(number) or number != int(number):
            raise slot.error(f"expected a whole number, got {_describe(value)}",
                             hint=f"write {slot.name} = <integer>, e.g. {slot.name} = {self.min or 1}")
        number = int(number)
        _check_range(number, self.min, self.max, slot)
        return number


class Float(FieldType):
    label = "number"

    def __init__(self, min: float | None = None, max: float | None = None, max_exclusive: bool = False):
        self.min, self.max, self.max_exclusive = min, max, max_exclusive

    def text(self, value) -> str:
        return _format_number(value)

    def read(self, slot):
        if _followed_by_inf(slot.expr()):
            return self.convert(math.inf, slot)
        return self.convert(slot.value(), slot)

    def convert(self, value, slot):
        number = parse_float_text(value) if isinstance(value, str) else value
        if not _is_number(number):
            raise slot.error(f"expected a number, got {_describe(value)}",
                             hint="numbers are written without quotes; infinity is \"infinity\" or \"1#INF\"")
        number = float(number)
        if math.isnan(number):
            raise slot.error("the value is not a number (NaN, as 0/0 gives)", hint=f"write {slot.name} = <number>")
        _check_range(number, self.min, self.max, slot, self.max_exclusive)
        return number


def _followed_by_inf(expr) -> bool:
    """CNTK writes infinity as `1#INF`; BrainScript reads `#INF` as a comment, leaving 1. A number
    directly followed by `#INF` in the source is taken as infinity, as CNTK's config layer does."""
    if not isinstance(expr, ast.Number) or expr.span.end_line != expr.span.line:
        return False

    line = sources.line_of(expr.span.file, expr.span.line) or ""
    return line[expr.span.end_col - 1:].upper().startswith("#INF")


def _check_range(number, lo, hi, slot, hi_exclusive: bool = False) -> None:
    if lo is not None and number < lo:
        raise slot.error(f"{_format_number(number)} is too small: must be at least {_format_number(lo)}")
    if hi is not None and (number >= hi if hi_exclusive else number > hi):
        bound = "less than" if hi_exclusive else "at most"
        raise slot.error(f"{_format_number(number)} is too large: must be {bound} {_format_number(hi)}")


_TRUE_WORDS = {"t", "true", "1"}
_FALSE_WORDS = {"f", "false", "0"}


class Bool(FieldType):
    """`true`/`false`, or the strings CNTK's config layer accepts (`t True TRUE 1` / `f False FALSE 0`)."""

    label = "true or false"

    def convert(self, value, slot):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        if _is_number(value) and value in (0, 1):
            return bool(value)
        raise slot.error(f"expected true or false, got {_describe(value)}",
                         hint=f"write {slot.name} = true or {slot.name} = false")


class String(FieldType):
    label = "string"

    def convert(self, value, slot):
        if not isinstance(value, str):
            raise slot.error(f"expected a string, got {_describe(value)}",
                             hint=f'put the value in quotes: {slot.name} = "..."')
        return value


class Path(String):
    """A file or directory name. Kept as written: CNTK resolves relative paths against the working
    directory, and readers/trainers do so when they open the file."""

    label = "path"

    def convert(self, value, slot):
        text = super().convert(value, slot)
        if not text.strip():
            raise slot.error("the path is empty")
        return text


def _word_or_value(slot: Slot):
    """The member's value, except that a bare identifier that is not a variable holding a plain value
    stands for itself: `gradUpdateType = adagrad`, `deviceId = auto`, `action = train` (where `train`
    is the enclosing block), as in CNTK's config layer where values are unquoted words."""
    expr = slot.expr()
    if isinstance(expr, ast.Ident):
        value = slot.lookup(expr.name)
        if value is None or not isinstance(value, (str, bool, int, float)):
            return expr.name
    return slot.value()


class Enum(FieldType):
    """One of a fixed set of words, case-insensitive; `aliases` maps legacy spellings to a value.

    A bare identifier that names a value (`gradUpdateType = adagrad`) is accepted as well as a string,
    because in CNTK's config layer values are unquoted words."""

    def __init__(self, values, aliases: dict | None = None):
        self.values = tuple(values)
        self.aliases = dict(aliases or {})
        self._index = {v.lower(): v for v in self.values}
        self._index.update({k.lower(): v for k, v in self.aliases.items()})
        self.label = "one of " + ", ".join(self.values)

    def lookup(self, word: str) -> str | None:
        return self._index.get(word.strip().lower())

    def read(self, slot):
        return self.convert(_word_or_value(slot), slot)

    def convert(self, value, slot):
        word = value
        if isinstance(value, bool):  # `autoAdjustLR = false` is a legacy spelling of none
            word = "true" if value else "false"
        if isinstance(word, str) and self.lookup(word) is not None:
            return self.lookup(word)
        hint = suggest(str(word), self.values) if isinstance(word, str) else None
        raise slot.error(f"{_describe(value)} is not a valid {slot.name}",
                         hint=hint or f"expected {self.label}")

    def from_default(self, value):
        return value if value is None else self.lookup(value) or value


class Device(FieldType):
    """`deviceId`: `-1`/`cpu` (CPU, returned as -1), `auto`, or a GPU index >= 0."""

    label = "-1 or cpu, auto, or a GPU index"

    def read(self, slot):
        return self.convert(_word_or_value(slot), slot)

    def convert(self, value, slot):
        if isinstance(value, str):
            word = value.strip().lower()
            if word == "cpu":
                return -1
            if word == "auto":
                return "auto"
            number = parse_float_text(word)
            value = number if number is not None else value
        if _is_number(value) and math.isfinite(value) and value == int(value) and value >= -1:
            return int(value)
        raise slot.error(f"{_describe(value)} is not a device", hint="use -1 or \"cpu\", \"auto\", or a GPU index 0, 1, ...")

    def text(self, value) -> str:
        return "cpu (-1)" if value == -1 else "auto" if value == "auto" else f"gpu {value}"


class Randomize(FieldType):
    """A reader's `randomize`: true/false, `auto`, `none`, or a window size in samples (HTK)."""

    label = "true, false, auto, none or a window size"

    def read(self, slot):
        return self.convert(_word_or_value(slot), slot)

    def convert(self, value, slot):
        if isinstance(value, str) and value.strip().lower() in ("auto", "none"):
            return value.strip().lower()
        if _is_number(value) and math.isfinite(value) and value == int(value) and value > 1:
            return int(value)
        return Bool().convert(value, slot)


class Names(list):
    """A list of names read from a `:` list; `spans[i]` is where name i was written (or None)."""

    def __init__(self, names=(), spans=()):
        super().__init__(names)
        self.spans = list(spans) or [None] * len(self)


class NameList(FieldType):
    """`command = train:test`, `evalNodeNames = ce:errs`: names, read from the unevaluated expression.

    An identifier gives its own name (so `train` works although it is a record), unless it is a variable
    holding a string or an array of strings (`command = $cmds$`): then its value is used. A string gives
    its text, split at `:`."""

    label = "names separated by ':'"

    def read(self, slot):
        expr = slot.expr()
        items = expr.items if isinstance(expr, ast.ArrayLit) else [expr]
        if expr is None or not all(isinstance(i, (ast.Ident, ast.String)) for i in items):
            return self.convert(slot.value(), slot)
        names = Names()
        for item in items:
            for name in self._names_of(item, slot):
                names.append(name)
                names.spans.append(item.span)
        return names

    def _names_of(self, item, slot) -> list[str]:
        if isinstance(item, ast.String):
            return _split_names(item.value)
        value = slot.lookup(item.name)
        if isinstance(value, str) or (_is_array(value) and all(isinstance(v, str) for v in value.items())):
            return self.convert(value, slot)
        return [item.name]

    def convert(self, value, slot):
        if isinstance(value, str):
            return Names(_split_names(value))
        if _is_array(value):
            items = list(value.items())
            if all(isinstance(v, str) for v in items):
                return Names([n for v in items for n in _split_names(v)])
        raise slot.error(f"expected names separated by ':', got {_describe(value)}",
                         hint=f"e.g. {slot.name} = a:b or {slot.name} = \"a:b\"")

    def from_default(self, value):
        if value is None:
            return None
        return Names(_split_names(value) if isinstance(value, str) else list(value))

    def plain(self, value):
        return list(value)

    def text(self, value) -> str:
        return ":".join(value)


def _split_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(":") if part.strip()]


class List(FieldType):
    """A `:` list of items of one type (`crossValidationInterval = 1:2:10`); one item is a list of one."""

    def __init__(self, item: FieldType):
        self.item = item
        self.label = f"list of {item.label}"

    def convert(self, value, slot):
        if isinstance(value, str) and ":" in value:
            values = _split_names(value)
        elif _is_array(value):
            values = list(value.items())
        else:
            values = [value]
        return [self.item.convert(v, slot) for v in values]

    def from_default(self, value):
        return None if value is None else list(value)

    def text(self, value) -> str:
        return ":".join(format_plain(to_plain(v)) for v in value)


# ---- schedules ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """A per-epoch schedule as CNTK writes it: `0.01*2:0.005` = 0.01 for epochs 1-2, then 0.005.

    `entries` are (value, epochs) pairs; the last entry's epochs is None when it was written without
    a count ("the rest"). Past the end, the last value repeats."""

    entries: tuple

    def value(self, epoch: int):
        """The value for the 1-based `epoch`."""
        if epoch < 1:
            raise ValueError(f"epochs are counted from 1, got {epoch}")
        seen = 0
        for value, count in self.entries:
            seen += 1 if count is None else count
            if epoch <= seen:
                return value
        return self.entries[-1][0]

    @property
    def values(self) -> list:
        return [value for value, _ in self.entries]

    @classmethod
    def constant(cls, value) -> "Schedule":
        return cls(((value, None),))

    def __str__(self) -> str:
        return ":".join(_format_number(value) if count in (None, 1) else f"{_format_number(value)}*{count}"
                        for value, count in self.entries)


class Scheduled(FieldType):
    """A `Schedule`-valued setting (`learningRatesPerMB`, `minibatchSize`, `dropoutRate`, ...).

    Read from the unevaluated expression: a number, `value*epochs`, a `:` list of those, or a string
    "0.01*2:0.005". Values may be numeric expressions or variables (`lr*2:lr/10` means lr for two
    epochs, then lr/10)."""

    def __init__(self, integer: bool = False, min: float | None = None, max: float | None = None,
                 max_exclusive: bool = False):
        self.integer = integer
        self.check = Int(min, max) if integer else Float(min, max, max_exclusive)
        self.label = "schedule like 0.01*2:0.005"

    def read(self, slot):
        expr = slot.expr()
        if expr is None or slot.scope() is None or isinstance(expr, (ast.String, ast.Interp)):
            return self.convert(slot.value(), slot)
        items = expr.items if isinstance(expr, ast.ArrayLit) else [expr]
        entries = []
        for i, item in enumerate(items):
            value_expr = item.left if isinstance(item, ast.BinOp) and item.op == "*" else item
            if value_expr is not item:  # value*epochs, not a product
                value = _evaluate_part(item.left, slot)
                count = self._count(_evaluate_part(item.right, slot), slot, item.right.span)
            else:
                value = _evaluate_part(item, slot)
                count = None if i == len(items) - 1 else 1
            if isinstance(value, str) and len(items) == 1:  # `lr = "0.1*2:0.01"` then `x = lr`
                return self.convert(value, slot)
            _check_finite(value, slot, value_expr.span)
            entries.append((value, count))
        return self._make(entries, slot)

    def _count(self, count, slot, span):
        if not _is_number(count) or count != int(count) or count < 1:
            raise slot.error(f"the number of epochs in 'value*epochs' must be a whole number >= 1, got "
                             f"{_describe(count)}", span=span,
                             hint="write a product as one number (e.g. 0.08) or compute it in a variable")
        return int(count)

    def _make(self, entries, slot) -> Schedule:
        for value, _ in entries:
            _check_finite(value, slot)
        typed = tuple((self.check.convert(v, slot), c) for v, c in entries)
        return Schedule(typed)

    def convert(self, value, slot):
        if _is_number(value):
            return self._make([(value, None)], slot)
        if isinstance(value, str):
            return self._make(self._parse_text(value, slot), slot)
        if _is_array(value):
            values = list(value.items())
            return self._make([(v, None if i == len(values) - 1 else 1) for i, v in enumerate(values)], slot)
        raise slot.error(f"expected a schedule like 0.01*2:0.005, got {_describe(value)}")

    def _parse_text(self, text: str, slot) -> list:
        parts = [p.strip() for p in text.split(":")]
        entries = []
        for i, part in enumerate(parts):
            value_text, star, count_text = part.partition("*")
            value = parse_float_text(value_text)
            count = parse_float_text(count_text) if star else None
            if value is None or (star and count is None):
                raise slot.error(f"cannot read schedule entry '{part}' in \"{text}\"",
                                 hint="a schedule is value or value*epochs, separated by ':' (0.01*2:0.005)")
            if star:
                count = self._count(count, slot, None)
            elif i < len(parts) - 1:
                count = 1
            entries.append((value, count))
        return entries

    def from_default(self, value):
        if value is None or isinstance(value, Schedule):
            return value
        return Schedule.constant(int(value) if self.integer else float(value))

    def plain(self, value):
        """One number when the schedule is constant, else CNTK's text form "0.01*2:0.005"."""
        if len(value.entries) == 1:
            return to_plain(value.entries[0][0])
        return str(value)

    def text(self, value) -> str:
        return str(value)


def _check_finite(value, slot, span: Span | None = None) -> None:
    """A schedule's value must be a finite number: `1/0` (inf) and `0/0` (NaN) are errors at the value."""
    if _is_number(value) and not math.isfinite(value):
        raise slot.error(f"a schedule value is {value}, not a finite number", span=span,
                         hint="a division by zero gives inf or nan; write the value as a number, e.g. 0.01")


def _evaluate_part(expr, slot):
    """The value of one part of a schedule expression (`lr/10` in `lr*2:lr/10`), in the member's scope."""
    return evaluate(expr, slot.scope(), slot.path)


# ---- nested blocks -----------------------------------------------------------------------------

class Block(FieldType):
    """A nested record validated with its own schema; the value is a `View`."""

    def __init__(self, schema: "Schema"):
        self.schema = schema
        self.label = f"{schema.name} block"

    def read(self, slot):
        value = slot.value()
        if not _is_record(value):
            raise slot.error(f"{slot.name} must be a block {{ ... }}, got {_describe(value)}")
        return validate(value, self.schema, slot.path, span=slot.span(), origin=slot.origin(),
                        context=slot.context)

    def plain(self, value):
        return value.to_dict()

    def text(self, value) -> str:
        return "{ ... }"


class RecordOf(FieldType):
    """A record whose members are named by the user and each validated with one schema
    (a reader's `input = { features = {...} ; labels = {...} }`). The value is a dict name -> View."""

    def __init__(self, schema: "Schema"):
        self.schema = schema
        self.label = f"record of {schema.name} blocks"

    def read(self, slot):
        value = slot.value()
        if not _is_record(value):
            raise slot.error(f"{slot.name} must be a block {{ name = {{ ... }} ; ... }}, got {_describe(value)}")
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

    def __init__(self, schema: "Schema"):
        self.schema = schema
        self.label = f"list of {schema.name} blocks"

    def read(self, slot):
        value = slot.value()
        records = list(value.items()) if _is_array(value) else [value]
        views = []
        for i, record in enumerate(records):
            path = f"{slot.path}[{i}]" if _is_array(value) else slot.path
            if not _is_record(record):
                raise slot.error(f"{path} must be a block {{ ... }}, got {_describe(record)}")
            views.append(validate(record, self.schema, path, span=_span_of_value(record) or slot.span(),
                                  origin=slot.origin(), context=slot.context))
        return views

    def plain(self, value):
        return [view.to_dict() for view in value]

    def text(self, value) -> str:
        return f"{len(value)} block(s)"


def _span_of_value(record) -> Span | None:
    return record.span


@dataclass
class NetworkRef:
    """An unevaluated network member: the IR builder evaluates it later with `evaluate()`."""

    record: Any
    name: str
    span: Span | None

    def evaluate(self):
        return self.record.get(self.name)

    def expr(self):
        return self.record.expr_of(self.name)

    def source_text(self) -> str | None:
        """The BrainScript text of the network expression, when the source is known."""
        try:
            return span_text(self.expr().span)
        except Exception:
            return None


class Network(FieldType):
    """The network builder member; never evaluated by validation (the network is built later)."""

    label = "network (BrainScript)"

    def read(self, slot):
        return NetworkRef(slot.record, slot.name, slot.span())

    def plain(self, value):
        return {"source": str(value.span) if value.span else None, "text": value.source_text()}

    def text(self, value) -> str:
        return f"<network at {value.span}>" if value.span else "<network>"


class Unsupported(FieldType):
    """A CNTK key netlang knowingly does not implement: giving it is an error with a hint."""

    label = "not supported"

    def __init__(self, hint: str):
        self.hint = hint

    def read(self, slot):
        raise slot.error(f"'{slot.name}' is not supported by netlang", hint=self.hint)


# ---- fields, schemas, views --------------------------------------------------------------------

@dataclass
class Field:
    """One setting: canonical `name`, type, default (REQUIRED: must be given), legacy aliases.

    `inherit`: when the key is missing in the block, look it up in the enclosing blocks up to the
    top level (CNTK does this for `modelPath`, `deviceId`, `traceLevel`, `minibatchSize`, ...)."""

    name: str
    type: FieldType
    default: Any = None
    aliases: tuple = ()
    doc: str = ""
    inherit: bool = False

    def keys(self) -> tuple:
        return (self.name, *self.aliases)


@dataclass
class Schema:
    """The settings of one kind of block.

    `closed`: any other key is an error. Open blocks (top level, actions) may hold user variables.
    `checks`: functions `check(view)` for rules between fields (run after all fields are read).
    `extra_blocks`: in a closed block, a record-valued member that is not a field is validated with
    this schema instead of rejected (legacy readers put one block per stream directly in the reader).
    `also_known`: keys accepted without error in an open block although they are not fields (keys the
    actions inherit from the top level).
    `command_block_keys`: at the top level, an unreferenced record member holding one of these keys is
    a command block that `command=...` may run later, not a typo."""

    name: str
    fields: list
    closed: bool = True
    checks: list = field(default_factory=list)
    extra_blocks: "Schema | None" = None
    also_known: Callable[[], set] | None = None
    doc: str = ""
    view_class: type | None = None
    command_block_keys: Callable[[], set] | None = None

    def __post_init__(self):
        self._index: dict[str, Field] = {}
        for f in self.fields:
            self._register(f)

    def _register(self, f: Field) -> None:
        for key in f.keys():
            if key.lower() in self._index:
                raise ValueError(f"schema {self.name}: key '{key}' defined twice")
            self._index[key.lower()] = f

    def add(self, *fields: Field) -> "Schema":
        """Add fields (other modules extend the reader and stream schemas this way)."""
        for f in fields:
            self.fields.append(f)
            self._register(f)
        return self

    def replace(self, new: Field) -> "Schema":
        """Swap the field with the same name for `new` (a module that refines a key's type)."""
        old = self.field(new.name)
        if old is None:
            raise ValueError(f"schema {self.name}: no field '{new.name}' to replace")
        for key in old.keys():
            del self._index[key.lower()]
        self.fields[self.fields.index(old)] = new
        self._register(new)
        return self

    def field(self, key: str) -> Field | None:
        return self._index.get(key.lower())


def own_names(record) -> list[str]:
    """The record's members as written in the config (not the standard library's)."""
    return [name for name in record.names() if record.origin_of(name) != "stdlib"]


def ancestors(record):
    """The enclosing records of `record`, innermost first."""
    parent = record.parent
    while parent is not None:
        yield parent
        parent = parent.parent


@dataclass
class ValidationContext:
    """What open blocks need to tell a user variable from a typo: every name the config refers to."""

    referenced: set = field(default_factory=set)
    top_record: Any = None

    def is_referenced(self, name: str) -> bool:
        return name in self.referenced


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
    members = _match_members(record, schema, path)
    _check_unknown_keys(view, record, members, context)  # first: a typo explains a missing key
    for f in schema.fields:
        _read_field(view, f, members.get(f.name), record, path, context)
    for check in schema.checks:
        check(view)
    return view


def _match_members(record, schema: Schema, path: str) -> dict[str, str]:
    """Canonical field name -> the record member that sets it; two spellings of one key are an error."""
    members: dict[str, str] = {}
    for name in own_names(record):
        f = schema.field(name)
        if f is None:
            continue
        if f.name in members:
            first = members[f.name]
            raise SchemaError(f"'{name}' and '{first}' are the same setting, given twice",
                              record.span_of(name), key=_join(path, name),
                              hint=f"keep one of them (keys are case-insensitive; aliases of '{f.name}': "
                                   f"{', '.join(f.aliases) or 'none'})")
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
        if name in known or name.lower() in also:
            continue
        if schema.closed:
            if schema.extra_blocks is not None and _is_record_member(record, name):
                view._extra_blocks[name] = Block(schema.extra_blocks).read(
                    Slot(record, name, _join(view.path, name), context))
                continue
            raise SchemaError(f"unknown key '{name}' in {schema.name}", record.span_of(name),
                              key=_join(view.path, name), hint=_key_hint(name, schema))
        near = suggest(name, [k for f in schema.fields for k in f.keys()])
        if context.is_referenced(name) or _is_unrun_action_block(view, record, name) or near is None:
            # A variable of the user's own: used by name or as $name$, or at least not a near miss
            # of a setting (CNTK configs carry such spare variables, e.g. imageLayout = "cudnn").
            view._user_names.append(name)
            continue
        where = f" in {view.path}" if view.path else ""
        raise SchemaError(f"unknown key '{name}'{where} (not a setting and never used)", record.span_of(name),
                          key=_join(view.path, name), hint=_key_hint(name, schema))


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
    """Every name the config's source refers to: identifiers, `$name$` interpolations, `.member`."""
    names: set[str] = set()
    for member in own_names(record):
        expr = record.expr_of(member)
        if expr is None:
            continue
        for node in ast.walk(expr):
            if isinstance(node, ast.Ident):
                names.add(node.name)
            elif isinstance(node, ast.Dot):
                names.add(node.name)
    return names


# ---- plain values ------------------------------------------------------------------------------

def to_plain(value):
    """An evaluated config value in JSON/YAML-friendly form."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if _is_number(value):
        if isinstance(value, float):
            if math.isinf(value):
                return "infinity" if value > 0 else "-infinity"
            if abs(value) < 1e15 and value == int(value):                 # NaN fails the first test
                return int(value)
        return value
    if isinstance(value, (Schedule, Names)):
        return str(value) if isinstance(value, Schedule) else list(value)
    if isinstance(value, View):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if _is_array(value):
        return [to_plain(v) for v in value.items()]
    return f"<{_kind_of(value).split(' ', 1)[-1]}>"  # records, functions, nodes: not evaluated further


def format_plain(value) -> str:
    """Short human text of a plain value."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return ":".join(format_plain(v) for v in value) if value else "(empty)"
    if isinstance(value, dict):
        return "{ ... }"
    return str(value)


def span_text(span: Span) -> str | None:
    """The source text a span covers (multi-line spans included), when the file is known."""
    if span is None or not span.end_line:
        return None
    lines = []
    for number in range(span.line, span.end_line + 1):
        line = sources.line_of(span.file, number)
        if line is None:
            return None
        start = span.col - 1 if number == span.line else 0
        end = span.end_col - 1 if number == span.end_line else len(line)
        lines.append(line[start:end])
    return "\n".join(lines)
