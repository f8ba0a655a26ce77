"""Schemas: the declaration of a block's settings.

A `Schema` lists the `Field`s of one kind of block; a field is one setting with its canonical name,
type (fields.py), default and legacy aliases, declared once. CNTK's config keys are
case-insensitive and a few have legacy aliases, so a schema finds a field by any case of any of its
keys. The schemas of netlang's blocks are in blocks.py; views.py validates records against them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from netlang.compiler.lang.fields import FieldType


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # a Field default meaning "the user must give this key"


@dataclass
class Field:
    """One setting: canonical `name`, type, default (REQUIRED: must be given), legacy aliases.

    `inherit`: when the key is missing in the block, look it up in the enclosing blocks up to the
    top level (CNTK does this for `modelPath`, `deviceId`, `traceLevel`, `minibatchSize`, ...).
    `unset_text`: what `netlang explain` shows for a key that is not given and has no default value,
    when its absence means something ("(none)" otherwise)."""

    name: str
    type: FieldType
    default: Any = None
    aliases: tuple = ()
    doc: str = ""
    inherit: bool = False
    unset_text: str = ""

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


