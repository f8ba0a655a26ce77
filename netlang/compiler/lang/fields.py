"""Field types: how one kind of setting is read from a config record and checked.

A field type reads one member of an evaluated record (a `Slot`) and returns its typed value or
raises a SchemaError at the member's position. Most types read the evaluated value; a few read the
*unevaluated* expression, as CNTK's string-based config layer does: `command = train:test` names
blocks although `train` evaluates to a record, and `learningRatesPerMB = 0.01*2:0.005` is a
schedule, not a product. The types of nested blocks (`Block`, `RecordOf`, `BlockList`) validate
with a schema and live with the validation, in views.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from netlang import sources
from netlang.compiler.lang import values
from netlang.compiler.lang.evaluator import evaluate
from netlang.compiler.lang.plain import (
    describe_value,
    format_number,
    format_plain,
    is_number,
    parse_float_text,
    span_text,
    to_plain,
)
from netlang.compiler.lang.schedule import Schedule, ScheduleError, epoch_count, parse_schedule_text
from netlang.errors import SchemaError, Span, suggest
from netlang.grammar import ast

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

    def __init__(self, record, name: str, path: str, context,
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


def _is_array(value) -> bool:
    return isinstance(value, values.Array)


def _is_record(value) -> bool:
    return isinstance(value, values.Record)


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
        if not is_number(number) or not math.isfinite(number) or number != int(number):
            raise slot.error(f"expected a whole number, got {describe_value(value)}",
                             hint=f"write {slot.name} = <integer>, e.g. {slot.name} = {self.min or 1}")
        number = int(number)
        _check_range(number, self.min, self.max, slot)
        return number


class Float(FieldType):
    label = "number"

    def __init__(self, min: float | None = None, max: float | None = None, max_exclusive: bool = False):
        self.min, self.max, self.max_exclusive = min, max, max_exclusive

    def text(self, value) -> str:
        return format_number(value)

    def read(self, slot):
        if _followed_by_inf(slot.expr()):
            return self.convert(math.inf, slot)
        return self.convert(slot.value(), slot)

    def convert(self, value, slot):
        number = parse_float_text(value) if isinstance(value, str) else value
        if not is_number(number):
            raise slot.error(f"expected a number, got {describe_value(value)}",
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
        raise slot.error(f"{format_number(number)} is too small: must be at least {format_number(lo)}")
    if hi is not None and (number >= hi if hi_exclusive else number > hi):
        bound = "less than" if hi_exclusive else "at most"
        raise slot.error(f"{format_number(number)} is too large: must be {bound} {format_number(hi)}")


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
        if is_number(value) and value in (0, 1):
            return bool(value)
        raise slot.error(f"expected true or false, got {describe_value(value)}",
                         hint=f"write {slot.name} = true or {slot.name} = false")


class String(FieldType):
    label = "string"

    def convert(self, value, slot):
        if not isinstance(value, str):
            raise slot.error(f"expected a string, got {describe_value(value)}",
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
        raise slot.error(f"{describe_value(value)} is not a valid {slot.name}",
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
        if is_number(value) and math.isfinite(value) and value == int(value) and value >= -1:
            return int(value)
        raise slot.error(f"{describe_value(value)} is not a device", hint="use -1 or \"cpu\", \"auto\", or a GPU index 0, 1, ...")

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
        if is_number(value) and math.isfinite(value) and value == int(value) and value > 1:
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
        raise slot.error(f"expected names separated by ':', got {describe_value(value)}",
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
        try:
            return epoch_count(count)
        except ScheduleError as err:
            raise slot.error(err.message, hint=err.hint, span=span) from None

    def _make(self, entries, slot) -> Schedule:
        for value, _ in entries:
            _check_finite(value, slot)
        typed = tuple((self.check.convert(v, slot), c) for v, c in entries)
        return Schedule(typed)

    def convert(self, value, slot):
        if is_number(value):
            return self._make([(value, None)], slot)
        if isinstance(value, str):
            return self._make(self._parse_text(value, slot), slot)
        if _is_array(value):
            values = list(value.items())
            return self._make([(v, None if i == len(values) - 1 else 1) for i, v in enumerate(values)], slot)
        raise slot.error(f"expected a schedule like 0.01*2:0.005, got {describe_value(value)}")

    def _parse_text(self, text: str, slot) -> list:
        try:
            return parse_schedule_text(text)
        except ScheduleError as err:
            raise slot.error(err.message, hint=err.hint) from None

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
    if is_number(value) and not math.isfinite(value):
        raise slot.error(f"a schedule value is {value}, not a finite number", span=span,
                         hint="a division by zero gives inf or nan; write the value as a number, e.g. 0.01")


def _evaluate_part(expr, slot):
    """The value of one part of a schedule expression (`lr/10` in `lr*2:lr/10`), in the member's scope."""
    return evaluate(expr, slot.scope(), slot.path)


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


