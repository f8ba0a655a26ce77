"""Leaf operations: values that are bound by the executor rather than computed.

Their shapes are the node's own (declared, or inferred from their consumers for parameters with 0
dimensions); they have no kernel. They are in the registry so that the registry stays the single
list of what exists.
"""
from __future__ import annotations

from netlang.ops.registry import OpDef, Param, Signature, register

# What `new ComputationNode` reads for an input; the builder is compiler/graph/leaves.py's, chosen
# by the leaf kind.
INPUT_SIGNATURE = Signature((
    Param("shape", None, aliases=("dims",)), Param("dynamicAxis", ""), Param("sparse", False)))
SPARSE_INPUT_SIGNATURE = Signature((Param("shape", None, aliases=("dims",)), Param("dynamicAxis", "")))
# A parameter's recipe; its initial value is drawn once every dimension is inferred.
PARAMETER_SIGNATURE = Signature((
    Param("shape", None, aliases=("dims",)), Param("learningRateMultiplier", 1.0), Param("init", ""),
    Param("initValueScale", 1), Param("value", 0), Param("initValue", ""), Param("initFilterRank", 0),
    Param("initOutputRank", 1), Param("initFromFilePath", ""), Param("initFromLiteral", ""),
    Param("initOnCPUOnly", True), Param("randomSeed", -1)))


def _own_shape(in_shapes, attrs):
    return tuple(attrs["shape"])


for _name, _kind, _signature, _aliases, _doc in (
    ("InputValue", "input", INPUT_SIGNATURE, ("Input",), "a dense input stream, bound by name to a reader stream"),
    ("SparseInputValue", "sparse_input", SPARSE_INPUT_SIGNATURE, ("SparseInput",),
     "a sparse input stream (one-hot words, …)"),
    ("LearnableParameter", "parameter", PARAMETER_SIGNATURE, ("Parameter", "ParameterTensor"),
     "a parameter tensor (learnable unless its learning-rate multiplier is 0)"),
    ("Constant", "constant", PARAMETER_SIGNATURE, (), "a fixed tensor"),
):
    register(OpDef(name=_name, arity=(0, 0), shape=_own_shape, forward=None, leaf=_kind, signature=_signature,
                   aliases=_aliases, doc=_doc, differentiable=False))
