"""The abstract syntax tree of netlang (BrainScript).

The parser (`parser.py`) produces these nodes; the evaluator (`compiler/evaluator.py`) consumes them.
Every node carries the Span of the source text it came from. Sugar is removed by the parser:

* `F(x, y=1) = e` and `F{x, y=1} = e`      -> Member("F", Lambda(params, e))
* `arr[i:a..b] = e`                         -> Member("arr", ArrayCtor(a, b, Lambda([Param("i")], e)))
* `x => e`                                  -> Lambda([Param("x")], e)
* `a : b : c` (also `(a:b):c`)              -> ArrayLit([a, b, c])   (parentheses leave no trace)
* `$name$` outside a string                 -> Ident("name")
* `"...$name$..."`                          -> Interp([String("..."), Ident("name"), String("...")])
* `include "f"`                             -> the included file's tokens, spliced in place

A `.cntk` file is read by CNTK's legacy rules (grammar/legacy.py) into the same nodes. While it is
being read its values are still text (`LegacyText`, `LegacyBrainScript`), so that command-line
overrides can change them before `$name$` is substituted; `legacy.resolve` turns them into `String`s
and parsed BrainScript. A value that cannot be resolved becomes a `Failure`, whose error is raised
only if the value is used, as CNTK reads a value only when an action asks for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netlang.errors import Span


@dataclass(eq=False)
class Node:
    span: Span


@dataclass(eq=False)
class Number(Node):
    value: float


@dataclass(eq=False)
class String(Node):
    value: str


@dataclass(eq=False)
class Interp(Node):
    """A string literal with `$name$` interpolations; parts are String and Ident nodes."""

    parts: list[Node]


@dataclass(eq=False)
class Bool(Node):
    value: bool


@dataclass(eq=False)
class Ident(Node):
    name: str


@dataclass(eq=False)
class Dot(Node):
    """Member access `obj.name`."""

    obj: Node
    name: str


@dataclass(eq=False)
class Index(Node):
    """Indexing `obj[index]`."""

    obj: Node
    index: Node


@dataclass(eq=False)
class Arg(Node):
    """One call argument; `name` is None for a positional argument."""

    name: str | None
    value: Node


@dataclass(eq=False)
class Call(Node):
    """`fn(args)` or `fn{args}`; `brace` records which bracket was used (the evaluator ignores it)."""

    fn: Node
    args: list[Arg]
    brace: bool = False


@dataclass(eq=False)
class BinOp(Node):
    """Binary operator: one of `* / .* ** % + - with == != < <= > >= && || >> <<`."""

    op: str
    left: Node
    right: Node


@dataclass(eq=False)
class UnaryOp(Node):
    """Prefix operator: `-`, `+` or `!`."""

    op: str
    operand: Node


@dataclass(eq=False)
class ArrayLit(Node):
    """The n-ary `:` array, already flattened by the parser."""

    items: list[Node]


@dataclass(eq=False)
class FSharpArray(Node):
    """`[| a ; b |]`: zero or more elements."""

    items: list[Node]


@dataclass(eq=False)
class Param(Node):
    """A function parameter; `default` None means positional."""

    name: str
    default: Node | None = None


@dataclass(eq=False)
class Lambda(Node):
    params: list[Param]
    body: Node
    name: str | None = None  # the member name for `F(x) = ...` definitions, for messages


@dataclass(eq=False)
class Member(Node):
    """`name = expr` inside a record (span covers the whole definition, `name_span` the name).

    `references`: in a legacy config, the `$name$` occurrences substituted into this member's value
    (as Idents), kept so that the checks know which keys the file uses."""

    name: str
    expr: Node
    name_span: Span | None = None
    origin: str = "file"  # "file" | "include" | "override" | "stdlib"
    references: list = field(default_factory=list)


@dataclass(eq=False)
class Record(Node):
    """`{ ... }` or `[ ... ]`; the file itself is a Record too."""

    members: list[Member] = field(default_factory=list)


@dataclass(eq=False)
class If(Node):
    cond: Node
    then: Node
    else_: Node


@dataclass(eq=False)
class New(Node):
    """`new TypeName operand`."""

    type_name: str
    arg: Node


@dataclass(eq=False)
class ArrayCtor(Node):
    """`array[first..last](fn)`; fn is normally a Lambda of one parameter."""

    first: Node
    last: Node
    fn: Node


@dataclass(eq=False)
class LegacyText(Node):
    """A value of a `.cntk` file's legacy layer as written: text whose `$name$` are not yet substituted."""

    text: str


@dataclass(eq=False)
class LegacyBrainScript(Node):
    """The network of a `.cntk` file as written (BrainScript text, `$name$` not yet substituted);
    `start` is the index of its first character in the text `source` (a legacy.LegacySource)."""

    source: object
    start: int
    end: int


@dataclass(eq=False)
class Failure(Node):
    """A value that could not be read (an undefined `$name$`, a network with a syntax error):
    evaluating it raises `error`."""

    error: object


def walk(node: Node):
    """Yield `node` and all nodes below it (pre-order)."""
    stack = [node]
    while stack:
        cur = stack.pop()
        yield cur
        for value in vars(cur).values():
            if isinstance(value, Node):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(v for v in reversed(value) if isinstance(v, Node))
