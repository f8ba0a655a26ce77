"""Leaf operations: values that are bound by the executor rather than computed.

Their shapes are the node's own (declared, or inferred from their consumers for parameters with 0
dimensions); they have no kernel. They are in the registry so that the registry stays the single
list of what exists.
"""
from __future__ import annotations

from netlang.ops.registry import OpDef, register


def _own_shape(in_shapes, attrs):
    return tuple(attrs["shape"])


for _name, _aliases, _doc in (
    ("InputValue", ("Input",), "a dense input stream, bound by name to a reader stream"),
    ("SparseInputValue", ("SparseInput",), "a sparse input stream (one-hot words, …)"),
    ("LearnableParameter", ("Parameter", "ParameterTensor"), "a parameter tensor (learnable unless its learning-rate multiplier is 0)"),
    ("Constant", (), "a fixed tensor"),
):
    register(OpDef(name=_name, arity=(0, 0), shape=_own_shape, forward=None, leaf=True,
                   aliases=_aliases, doc=_doc, differentiable=False))
