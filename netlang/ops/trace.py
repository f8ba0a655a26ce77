"""Trace: a pass-through node that prints the values flowing through it (CNTK's debug aid, reference §4.4).

`Trace (node, say='', logFrequency=100, logFirst=10, logGradientToo=false, onlyUpToRow=100000000,
onlyUpToT=100000000, format=[])`: the value is the input, unchanged, and so is the gradient. The
node prints on its first `logFirst` evaluations and on every `logFrequency`-th after them, to stderr:
`say` (or the node's name), the minibatch's shape, then at most `onlyUpToRow` values of each sample
and `onlyUpToT` time steps; with `logGradientToo` the gradient too. CNTK's `format` record (real or
category output, transposed …) is accepted; values are printed as plain numbers.
"""
from __future__ import annotations

import sys

import numpy as np

from netlang.ops.registry import InputSpec, OpCheck, OpDef, Param, Signature, register

SIGNATURE = Signature((Param("say", ""), Param("logFrequency", 100), Param("logFirst", 10),
                       Param("logGradientToo", False), Param("onlyUpToRow", 100000000),
                       Param("onlyUpToT", 100000000), Param("format", None)))


def _due(count: int, attrs) -> bool:
    """Whether the `count`-th evaluation (from 0) prints."""
    first = int(SIGNATURE.value(attrs, "logFirst"))
    every = max(int(SIGNATURE.value(attrs, "logFrequency")), 1)
    return count < first or (count - first) % every == every - 1


def _print(ctx, what: str, value, attrs) -> None:
    host = np.asarray(ctx.backend.to_host(value))
    rows = int(SIGNATURE.value(attrs, "onlyUpToRow"))
    steps = int(SIGNATURE.value(attrs, "onlyUpToT"))
    shown = host[:steps] if ctx.out_dyn == 2 else host
    shown = shown.reshape(shown.shape[:ctx.out_dyn] + (-1,))[..., :rows]
    label = SIGNATURE.value(attrs, "say") or ctx.node_name
    print(f"Trace {label} {what} {tuple(host.shape)}:\n{np.array2string(shown, precision=4, threshold=1000)}",
          file=sys.stderr, flush=True)


def _forward(ctx, xs, attrs):
    count = ctx.state.get("evaluations", 0)
    ctx.state["evaluations"] = count + 1
    if _due(count, attrs):
        _print(ctx, "value", xs[0], attrs)
    return xs[0]


def _backward(ctx, xs, y, gy, attrs):
    if SIGNATURE.value(attrs, "logGradientToo") and _due(ctx.state.get("evaluations", 1) - 1, attrs):
        _print(ctx, "gradient", gy, attrs)
    return [gy]


register(OpDef(
    name="Trace", arity=(1, 1), shape=lambda in_shapes, attrs: tuple(in_shapes[0]), forward=_forward,
    backward=_backward, stateful=True, signature=SIGNATURE,
    doc="pass-through that prints its value (and gradient) on the first logFirst and every logFrequency-th run",
    checks=[OpCheck((InputSpec((3,), 1),), attrs={"logFirst": 0, "logFrequency": 1000}, out=(3,))],
))
