"""The values of BrainScript: numbers, bools, strings, records, arrays, functions and thunks.

Numbers are Python floats (BrainScript has no integer type), bools are Python bools, strings are
Python strings. Everything that is evaluated lazily lives in a `Thunk`: record members, array
elements, call arguments and default values. Opaque objects (network nodes and other objects made
by `new`) come from the scope's NodeFactory (nodes.py) and are passed through untouched.

The evaluator (`evaluator.py`) creates these values; the config schema, the CLI and the IR read
them through the small APIs below (`Record.get`, `Array.items`, `Lambda.call`, ...).
"""
from __future__ import annotations

from typing import Any, Callable

from netlang.compiler.lang.nodes import NO_NODES, NodeFactory
from netlang.errors import EvalError, NetlangError, Span, suggest

# How many thunk evaluations and function calls may be nested before we call it runaway recursion.
# Each level costs a handful of Python frames; evaluator.py raises Python's recursion limit to match.
MAX_NESTING = 10_000

_PENDING, _RUNNING, _DONE = 0, 1, 2

# Thunks under evaluation, outermost first: names the members of a cycle when one closes.
_running: list["Thunk"] = []
# Nested thunk evaluations plus function calls in progress (see MAX_NESTING).
_nesting = 0
# Source spans of the function calls in progress, outermost first: the IR gives a node built inside
# the standard library the position of the user's call that led there.
call_spans: list = []


def enter_nesting(span: Span | None) -> None:
    """Count one more level of nested evaluation; too many means runaway recursion."""
    global _nesting
    _nesting += 1
    if _nesting > MAX_NESTING:
        _nesting -= 1
        raise EvalError(f"recursion too deep (more than {MAX_NESTING} nested evaluations)", span,
                        hint="a function or member probably refers to itself without end")


def leave_nesting() -> None:
    global _nesting
    _nesting -= 1


def _with_frame(err: NetlangError, what: str, span: Span | None) -> NetlangError:
    """Add an outer evaluation context to `err`, unless the error already points there."""
    if span is not None and span != err.span:
        err.add_frame(what, span)
    return err


def _recursion_error(span: Span | None) -> EvalError:
    return EvalError("recursion too deep for the Python interpreter", span,
                     hint="a function or member probably refers to itself without end")


class Path:
    """An expression path, built by appending parts; its text is made only when asked for.

    Paths grow with every nested call (`v.PlusArgs[1].PlusArgs[1]...` in a recursion), so joining
    strings eagerly would cost time quadratic in the recursion depth; only node names need the text.
    """

    __slots__ = ("parent", "part", "_text")

    def __init__(self, parent: "Path | str | None", part: str):
        self.parent = parent
        self.part = part
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            parts = []
            node = self
            while isinstance(node, Path) and node._text is None:
                parts.append(node.part)
                node = node.parent
            pieces = [str(node)] if node else []
            for part in reversed(parts):
                if pieces and not part.startswith("["):
                    pieces.append(".")
                pieces.append(part)
            self._text = "".join(pieces)
        return self._text

    def __repr__(self) -> str:
        return f"Path({str(self)!r})"


def join_path(path, name: str):
    """`path.name` (`path[i]` when name is `[i]`); `path` is a Path, a string or empty."""
    if not name:
        return path
    return Path(path or None, name)


class Thunk:
    """A value computed on first use and memoised.

    `compute` is a zero-argument function. `name` and `kind` say what the thunk is for messages
    ("member 'out.z'", cycles `x -> y -> x`); `span` is where it is defined. `expr`/`scope` keep the
    unevaluated expression and its scope for readers that want the expression itself (schedules).
    """

    __slots__ = ("compute", "value", "state", "name", "kind", "span", "expr", "scope")

    def __init__(self, compute: Callable[[], Any] | None, name: str = "", kind: str = "value",
                 span: Span | None = None, expr=None, scope=None):
        self.compute = compute
        self.value = None
        self.state = _PENDING
        self.name = name
        self.kind = kind
        self.span = span
        self.expr = expr
        self.scope = scope

    @classmethod
    def of(cls, value, name: str = "", span: Span | None = None) -> "Thunk":
        """An already evaluated thunk (for values computed in Python)."""
        thunk = cls(None, name, "value", span)
        thunk.value = value
        thunk.state = _DONE
        return thunk

    def force(self):
        if self.state == _DONE:
            return self.value
        if self.state == _RUNNING:
            raise self._cycle_error()
        enter_nesting(self.span)
        self.state = _RUNNING
        _running.append(self)
        try:
            value = self.compute()
        except NetlangError as err:
            self.state = _PENDING
            raise _with_frame(err, f"{self.kind} '{self.name}'", self.span)
        except RecursionError:
            self.state = _PENDING
            raise _recursion_error(self.span) from None
        finally:
            _running.pop()
            leave_nesting()
        self.value = value
        self.state = _DONE
        self.compute = None  # drop the closure (and the scopes it holds)
        return value

    def _cycle_error(self) -> EvalError:
        start = len(_running) - 1
        while start >= 0 and _running[start] is not self:
            start -= 1
        chain = [str(t.name or "?") for t in _running[start:]] + [str(self.name or "?")]
        closing = _running[-1] if _running else self
        return EvalError("cyclic reference: " + " -> ".join(chain), closing.span,
                         hint="a value cannot depend on itself; recurrent loops need PastValue/FutureValue")

    def __repr__(self) -> str:
        state = ("pending", "running", "done")[self.state]
        return f"<Thunk {self.kind} {self.name!r} {state}>"


class Record:
    """An ordered set of named thunks plus the lexical parent scope.

    Records are also the scopes of evaluation: a record literal, a function's arguments, the
    standard library and the root scope of built-in helpers are all Records chained by `parent`.
    `path` is the expression path of the place the record was made (node naming).
    """

    __slots__ = ("_thunks", "_defs", "parent", "_path", "span", "is_arguments", "nodes")

    def __init__(self, parent: "Record | None" = None, path="", span: Span | None = None,
                 is_arguments: bool = False, nodes: NodeFactory | None = None):
        self._thunks: dict[str, Thunk] = {}
        self._defs: dict = {}  # name -> ast.Member, for members written in source
        self.parent = parent
        self._path = path  # a string or a Path (text made on demand)
        self.span = span
        self.is_arguments = is_arguments  # the argument scope of a function call
        # The factory of network nodes of the evaluation this scope belongs to (compiler/lang/nodes.py):
        # given to a file's root scope, inherited by every scope made below it.
        self.nodes = nodes if nodes is not None else parent.nodes if parent is not None else NO_NODES

    @property
    def path(self) -> str:
        """The expression path of the place the record was made ("" at the top)."""
        return str(self._path) if self._path else ""

    def add(self, name: str, thunk: Thunk, definition=None) -> None:
        self._thunks[name] = thunk
        if definition is not None:
            self._defs[name] = definition

    # --- reading -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Member names in definition order."""
        return list(self._thunks)

    def has(self, name: str) -> bool:
        return name in self._thunks

    def get(self, name: str):
        """The value of member `name` (evaluated now); EvalError if there is no such member."""
        return self._thunk(name).force()

    def find(self, name: str):
        """Value of `name` in this record or the nearest lexical parent that has it, else None."""
        thunk = self.lookup(name)
        return None if thunk is None else thunk.force()

    def lookup(self, name: str) -> Thunk | None:
        """The thunk of `name` in this record or its lexical parents (not forced)."""
        scope = self
        while scope is not None:
            thunk = scope._thunks.get(name)
            if thunk is not None:
                return thunk
            scope = scope.parent
        return None

    def find_ci(self, name: str) -> str | None:
        """The actual name of the own member matching `name` case-insensitively (exact match first)."""
        if name in self._thunks:
            return name
        lowered = name.lower()
        for member in self._thunks:
            if member.lower() == lowered:
                return member
        return None

    def span_of(self, name: str) -> Span | None:
        definition = self._defs.get(name)
        if definition is not None:
            return definition.name_span or definition.span
        return self._thunk(name).span

    def origin_of(self, name: str) -> str:
        """Where the member came from: "file", "include", "override" or "stdlib"."""
        definition = self._defs.get(name)
        if definition is not None:
            return definition.origin
        self._thunk(name)
        return "file"

    def definition(self, name: str):
        """The ast.Member that defines member `name` in source, or None for computed members."""
        return self._defs.get(name)

    def expr_of(self, name: str):
        """The unevaluated expression of member `name` (an ast.Node), or None for computed values."""
        return self._thunk(name).expr

    def scope_of(self, name: str) -> "Record | None":
        """The scope in which `expr_of(name)` is to be evaluated."""
        return self._thunk(name).scope

    def thunk_of(self, name: str) -> Thunk:
        return self._thunk(name)

    def visible_names(self) -> list[str]:
        """All names visible from this scope (own members first), for 'did you mean' hints."""
        names: list[str] = []
        scope = self
        while scope is not None:
            names.extend(scope._thunks)
            scope = scope.parent
        return names

    def _thunk(self, name: str) -> Thunk:
        thunk = self._thunks.get(name)
        if thunk is None:
            where = f" '{self.path}'" if self.path else ""
            raise EvalError(f"record{where} has no member '{name}'", self.span,
                            hint=suggest(name, self._thunks))
        return thunk

    def __repr__(self) -> str:
        return f"<Record {self.path or '<top>'} {{{', '.join(self._thunks)}}}>"


class Array:
    """A BrainScript array: element thunks plus the index of the first element.

    `:` arrays and `[| |]` start at 0; `array[first..last](f)` starts at `first`.
    """

    __slots__ = ("thunks", "first", "span")

    def __init__(self, thunks: list[Thunk], first: int = 0, span: Span | None = None):
        self.thunks = thunks
        self.first = first
        self.span = span

    @classmethod
    def from_values(cls, values: list, first: int = 0) -> "Array":
        """An array of values computed in Python."""
        return cls([Thunk.of(value) for value in values], first)

    def __len__(self) -> int:
        return len(self.thunks)

    @property
    def last(self) -> int:
        return self.first + len(self.thunks) - 1

    def get(self, index: int, span: Span | None = None):
        """Element `index` (BrainScript indexing, from `first`), evaluated now."""
        pos = index - self.first
        if pos < 0 or pos >= len(self.thunks):
            raise EvalError(f"Index {index} out of bounds [{self.first}..{self.last}]", span or self.span)
        return self.thunks[pos].force()

    def items(self) -> list:
        """All elements, evaluated, in index order."""
        return [thunk.force() for thunk in self.thunks]

    def __repr__(self) -> str:
        if self is NONE:
            return "<None [| |]>"
        return f"<Array [{self.first}..{self.last}]>"


# BS.Constants.None: the one empty array; optional parameters are tested against it by identity.
NONE = Array([], 0)


class Lambda:
    """A function value: positional parameter names, optional parameters with default thunks.

    `impl(args, span, path)` computes the result from the argument scope `args` (a Record whose
    parent is the closure scope), the call's span and the caller's expression path. User functions
    evaluate their body there; built-in helpers are Python functions with the same signature.
    """

    __slots__ = ("params", "defaults", "closure", "impl", "span", "name", "path")

    def __init__(self, params: list[str], defaults: dict[str, Thunk], closure: Record | None,
                 impl: Callable[[Record, Span | None, str], Any], span: Span | None = None,
                 name: str = "function", path: str = ""):
        self.params = params
        self.defaults = defaults
        self.closure = closure
        self.impl = impl
        self.span = span
        self.name = name
        self.path = path

    def call(self, positional: list, named: dict, span: Span | None = None, caller_path: str = ""):
        """Apply the function. Arguments are Thunks (lazy) or plain values."""
        if len(positional) != len(self.params):
            raise EvalError(f"function expects {len(self.params)} positional parameters, "
                            f"{len(positional)} were provided", span,
                            hint=f"{self.name}({', '.join(self.params)})" if self.params else None)
        args = Record(self.closure, caller_path, span, is_arguments=True)
        for name, value in zip(self.params, positional):
            args.add(name, value if isinstance(value, Thunk) else Thunk.of(value, name, span))
        for name, value in named.items():
            if name not in self.defaults:
                arg_span = value.span if isinstance(value, Thunk) and value.span else span
                raise EvalError(f"function does not have an optional argument '{name}'", arg_span,
                                hint=suggest(name, self.defaults, case_insensitive=False))
        for name, default in self.defaults.items():
            value = named.get(name, default)
            args.add(name, value if isinstance(value, Thunk) else Thunk.of(value, name, span))
        enter_nesting(span)
        call_spans.append(span)
        try:
            return self.impl(args, span, caller_path)
        except NetlangError as err:
            raise _with_frame(err, f"call of {self.name}", span)
        except RecursionError:
            raise _recursion_error(span) from None
        finally:
            call_spans.pop()
            leave_nesting()

    def __repr__(self) -> str:
        return f"<function {self.name}({', '.join(self.params + [n + '=' for n in self.defaults])})>"


def enclosing_argument_thunks(record: Record) -> list[tuple[str, Thunk]]:
    """(name, thunk) of the arguments of the function call whose body made `record`.

    CNTK's "plus the function args" idiom: a constructor called as `new T [ ... ]` inside a
    function body also sees that function's parameters. The thunks are not forced, so a caller can
    leave alone an argument that must not be evaluated yet (the input of a PastValue in a loop).
    """
    scope = record
    while scope is not None and not scope.is_arguments:
        scope = scope.parent
    return [] if scope is None else list(scope._thunks.items())


def enclosing_arguments(record: Record) -> list[tuple[str, Any]]:
    """(name, value) of the arguments of the function call whose body made `record` (all forced)."""
    return [(name, thunk.force()) for name, thunk in enclosing_argument_thunks(record)]


def type_name(value) -> str:
    """The BrainScript type of a value, for messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Record):
        return "record"
    if isinstance(value, Array):
        return "array"
    if isinstance(value, Lambda):
        return "function"
    return getattr(value, "type_name", None) or type(value).__name__
