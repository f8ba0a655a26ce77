"""The standard library's primitive wrappers agree with their ops' signatures.

A BrainScript user calls `Slice (beginIndex, endIndex, input, axis=1)`, a wrapper in stdlib/*.net
that makes the node with `new ComputationNode [ operation = 'Slice' … ]`; the kernels read the same
attributes through the OpDef's `Signature`. For every such wrapper (an operation given as a string
literal), each parameter that is not an input must be an attribute of the op (by its name or one of
its spellings), and a default the wrapper gives must be the OpDef's default. So a default is
written in Python once, and the library cannot drift from it.
"""
from __future__ import annotations

import pytest

from netlang.grammar import ast
from netlang.grammar.library import load_stdlib
from netlang.ops import registry
from netlang.ops.registry import REQUIRED

NOT_ATTRIBUTES = {"tag"}          # read by the node constructor itself


def _members(record: ast.Record, prefix: str = ""):
    for member in record.members:
        path = f"{prefix}{member.name}"
        yield path, member.expr
        if isinstance(member.expr, ast.Record):
            yield from _members(member.expr, path + ".")


def _new_node(body):
    """(the `new ComputationNode` record, the record around it or None) of a wrapper's body."""
    if isinstance(body, ast.New) and body.type_name == "ComputationNode" and isinstance(body.arg, ast.Record):
        return body.arg, None
    if isinstance(body, ast.Dot) and isinstance(body.obj, ast.Record):     # { …; result = new … }.result
        inner = _member(body.obj, body.name)
        if inner is not None:
            record, _ = _new_node(inner)
            return record, body.obj
    return None, None


def _member(record: ast.Record, name: str):
    return next((m.expr for m in record.members if m.name == name), None)


def _identifiers(expr, scope: ast.Record | None) -> set[str]:
    """Names an expression reads, following members of the surrounding record."""
    names, pending, seen = set(), [expr], set()
    while pending:
        for node in ast.walk(pending.pop()):
            if isinstance(node, ast.Ident) and node.name not in names:
                names.add(node.name)
                inner = _member(scope, node.name) if scope is not None else None
                if inner is not None and node.name not in seen:
                    seen.add(node.name)
                    pending.append(inner)
    return names


def _literal(expr):
    if isinstance(expr, (ast.Number, ast.String, ast.Bool)):
        return expr.value
    if isinstance(expr, ast.UnaryOp) and expr.op == "-" and isinstance(expr.operand, ast.Number):
        return -expr.operand.value
    if isinstance(expr, ast.Ident) and expr.name in ("None", "_NoneValue"):
        return None
    raise AssertionError(f"a default that is not a literal: {expr}")


def wrappers():
    """(path, parameters, op, inputs, renamed) of every wrapper that makes a node of a named op."""
    out = []
    for path, expr in _members(load_stdlib()):
        if not isinstance(expr, ast.Lambda):
            continue
        record, scope = _new_node(expr.body)
        operation = _member(record, "operation") if record is not None else None
        if not isinstance(operation, ast.String):
            continue
        inputs = _member(record, "inputs")
        input_names = _identifiers(inputs, scope) if inputs is not None else set()
        # `kernelShape = kernelDims`: the parameter kernelDims reaches the node as kernelShape.
        renamed = {m.expr.name: m.name for m in record.members if isinstance(m.expr, ast.Ident)}
        out.append(pytest.param(path, expr.params, operation.value, input_names, renamed, id=path))
    return out


WRAPPERS = wrappers()


def test_the_library_has_primitive_wrappers():
    assert len(WRAPPERS) > 30


@pytest.mark.parametrize("path,params,operation,inputs,renamed", WRAPPERS)
def test_wrapper_parameters_are_the_ops_attributes_with_its_defaults(path, params, operation, inputs, renamed):
    op = registry.get(operation)
    assert op is not None, f"{path} makes an unknown operation '{operation}'"
    for param in params:
        if param.name in inputs or param.name in NOT_ATTRIBUTES:
            continue
        attribute = renamed.get(param.name, param.name)
        declared = op.signature.param(attribute) if op.signature is not None else None
        assert declared is not None, (
            f"{path}: parameter '{param.name}' is not an attribute of {op.name}; declare it in the OpDef's signature")
        if param.default is not None:
            assert declared.default is not REQUIRED, f"{path}: '{param.name}' has a default, {op.name}'s has none"
            assert declared.default == _literal(param.default), (
                f"{path}: '{param.name}' defaults to {_literal(param.default)!r} in the library but to "
                f"{declared.default!r} in {op.name}'s signature")


def test_every_spelling_belongs_to_one_attribute():
    for op in registry.all_ops():
        if op.signature is not None:
            spellings = op.signature.spellings
            assert len(spellings) == len(set(spellings)), f"{op.name} spells an attribute twice"


def test_a_signature_gives_the_default_and_reads_any_spelling():
    signature = registry.get("Convolution").signature
    assert signature.value({}, "strideShape") == 1
    assert signature.value({"stride": 2}, "strideShape") == 2
    assert signature.value({"strideShape": 3, "stride": 2}, "stride") == 3     # the name first
    assert signature.value({"stride": None}, "strideShape") == 1               # None is "not given"
