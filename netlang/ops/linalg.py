"""Matrix products: Times and TransposeTimes.

`Times(A, B, outputRank=1, inferInputRankToMap=-1)` (reference §4.1): the first `outputRank` axes of
A are output axes, A's remaining axes are reduced against the *leading* axes of B, B's leftover
axes are kept: `[I x J x K] * [J x K x L] -> [I x L]`. 0-dims of A in reduction positions are
inferred from B.

At run time A is usually static (a parameter, row-major `reversed(A)`: reduction axes first, output
axes last) and B carries the dynamic axes with its reduction axes last, so the whole product is one
matmul: `B.reshape(-1, K) @ A.reshape(K, M)`, then the leading axes are restored. With the usual
weight `W` of BS shape `(out, in)` stored as `(in, out)`, `Times(W, x)` for a batch `(N, in)` is
`x @ W_rm`. As in CNTK, A may also have dynamic axes (an attention window times a constant, a label
sequence in `TransposeTimes (labels, z)`): then the product is taken sample by sample, one batched
matmul, and both operands' dynamic axes must agree when both have them.

`TransposeTimes(A, B)` is `Aᵀ·B`; a rank-1 A is a column `[n x 1]`, so `TransposeTimes` of two
vectors of the same length is their dot product, `[1]`.
"""
from __future__ import annotations

from netlang.ir.shapes import format_shape, num_elements
from netlang.ops.registry import InputSpec, OpCheck, OpDef, Param, ShapeMismatch, ShapeResult, Signature, register

TIMES_SIGNATURE = Signature((Param("outputRank", 1), Param("inferInputRankToMap", -1)))


def output_rank(attrs, transpose: bool) -> int:
    return 1 if transpose else int(TIMES_SIGNATURE.value(attrs, "outputRank"))


# ---- shape rule --------------------------------------------------------------------------------

def _legacy_flatten_rank(dims_a: list, b: tuple) -> int:
    """Number of B's leading axes that together match a 2-D A's column count, or 0.

    CNTK's patch for models written when only matrix sizes were known: `A [M x N] * B [N1 x N2]`
    with N = N1·N2 flattens B's leading axes silently.
    """
    if len(dims_a) != 2 or not b or 0 in (dims_a[1], b[0]) or dims_a[1] == b[0]:
        return 0
    product = 1
    for k, d in enumerate(b, start=1):
        product *= d
        if product == dims_a[1] and k > 1:
            return k
        if product > dims_a[1] or d == 0:
            return 0
    return 0


def times_rule(in_shapes, attrs, transpose: bool = False):
    """CNTK's Times/TransposeTimes shape rule, with inference of A's 0-dims from B."""
    a, b = tuple(in_shapes[0]), tuple(in_shapes[1])
    name = "TransposeTimes" if transpose else "Times"
    both = f"{format_shape(a)} and {format_shape(b)}"
    output_rank = int(TIMES_SIGNATURE.value(attrs, "outputRank"))
    infer_rank = int(TIMES_SIGNATURE.value(attrs, "inferInputRankToMap"))
    dims_a = list(a)
    if transpose:
        if len(dims_a) > 2 or output_rank != 1:
            raise ShapeMismatch(f"{name} needs a first operand of rank 1 or 2 and outputRank 1, got {both}")
        if len(dims_a) == 1:
            dims_a = dims_a + [1]               # a vector is a column [n x 1]
        dims_a = [dims_a[1], dims_a[0]]
        infer_rank = -1
    if not 0 <= output_rank <= len(dims_a):
        raise ShapeMismatch(f"{name}: outputRank {output_rank} exceeds the rank of the first operand ({both})")
    if 0 in dims_a[:output_rank]:
        raise ShapeMismatch(f"{name}: the output dimensions of the first operand must be known, got {both}")
    num_reduce = len(dims_a) - output_rank

    # inferInputRankToMap: pad an A ending in 0 with further 0-dims until exactly that many
    # trailing axes of B stay unreduced (0 = flatten all of B's axes into the product).
    if infer_rank >= 0 and dims_a and dims_a[-1] == 0:
        if infer_rank >= len(b):
            raise ShapeMismatch(f"{name}: inferInputRankToMap {infer_rank} must be less than the rank of "
                                f"the second operand ({both})")
        while num_reduce + infer_rank < len(b):
            dims_a.append(0)
            num_reduce += 1

    legacy = 0 if transpose or output_rank != 1 else _legacy_flatten_rank(dims_a, b)
    if legacy:
        b = (num_elements(b[:legacy]),) + b[legacy:]
    if num_reduce > len(b):
        raise ShapeMismatch(f"{name}: operand shapes {both} are not compatible: the first operand reduces "
                            f"{num_reduce} axes, the second has only {len(b)}")
    for k in range(num_reduce):
        ak, bk = dims_a[output_rank + k], b[k]
        if ak == 0:
            dims_a[output_rank + k] = bk
        elif bk != 0 and ak != bk:
            raise ShapeMismatch(f"{name}: operand shapes {both} are not compatible (dimension {ak} of the "
                                f"first against {bk} of the second)")
    out = tuple(dims_a[:output_rank]) + tuple(b[num_reduce:])
    new_a = tuple(dims_a)
    if transpose:
        new_a = (new_a[1],) if len(a) == 1 else (new_a[1], new_a[0])
    if new_a != a:
        return ShapeResult(out, infer={0: new_a})
    return out


def _transpose_times_rule(in_shapes, attrs):
    return times_rule(in_shapes, attrs, transpose=True)


def _product_layout(name):
    """Output layout: the dynamic axes of whichever operand has them; both must agree when both do.

    Called with the input nodes (their `.layout`: None = static) by shape inference, or with plain
    layouts (dynamic-axis counts, 0 = static) by the checks.
    """
    def layout(inputs, attrs):
        first, second = (getattr(item, "layout", item) for item in inputs)
        if first and second and first != second:
            raise ShapeMismatch(f"{name}: both operands have dynamic axes, and they differ ({first} and {second}); "
                                "a product of two dynamic operands is taken sample by sample")
        return first or second
    return layout


# ---- kernel ------------------------------------------------------------------------------------

def _effective_a(a, transpose: bool, dyn: int = 0):
    """A's row-major array as Times sees it (TransposeTimes swaps A's two BS axes; a vector is a
    column, so its transpose is a row). The first `dyn` axes are A's dynamic axes."""
    if not transpose:
        return a
    if a.ndim - dyn == 1:
        return a.reshape(a.shape + (1,))
    return a.swapaxes(-1, -2)


def _operands(a_eff, b, output_rank: int, dyn_b: int = 0):
    """A as a (K, M) matrix, B as (L, K), and the row-major shape of the result."""
    num_reduce = a_eff.ndim - output_rank
    k = num_elements(a_eff.shape[:num_reduce])
    out_axes = a_eff.shape[num_reduce:]
    b_reduce = num_reduce
    if output_rank == 1 and a_eff.ndim == 2 and b.ndim - dyn_b and a_eff.shape[0] != b.shape[-1]:
        b_reduce = _legacy_trailing_axes(b.shape[dyn_b:], k)  # the legacy flattening of the rule
    kept = b.shape[:b.ndim - b_reduce]
    return a_eff.reshape(k, -1), b.reshape(-1, k), kept + out_axes


def _sample_operands(a_eff, b, output_rank: int, dyn_a: int, dyn_b: int):
    """A dynamic A as (S, K, M) (S samples), B as (S, L, K) or a static (L, K), and the row-major
    shape of the result (A's dynamic axes first)."""
    lead = a_eff.shape[:dyn_a]
    sample = a_eff.shape[dyn_a:]
    num_reduce = len(sample) - output_rank
    k = num_elements(sample[:num_reduce])
    out_axes = sample[num_reduce:]
    b_sample = b.shape[dyn_b:]
    kept = b_sample[:len(b_sample) - num_reduce]
    samples = num_elements(lead)
    a3 = a_eff.reshape(samples, k, -1)
    b2 = b.reshape(samples, -1, k) if dyn_b else b.reshape(-1, k)
    return a3, b2, lead + kept + out_axes


def _legacy_trailing_axes(rm_shape, k: int) -> int:
    product = 1
    for n, d in enumerate(reversed(rm_shape), start=1):
        product *= d
        if product == k and n > 1:
            return n
    raise ShapeMismatch(f"Times: no leading axes of [{rm_shape}] match the {k} columns of the first operand")


def _dyn(ctx) -> tuple[int, int]:
    dyn = tuple(ctx.dyn) if ctx.dyn else (0, 0)
    return dyn[0], dyn[1] if len(dyn) > 1 else 0


def _make_times(transpose: bool):
    def forward(ctx, xs, attrs):
        a, b = xs
        dyn_a, dyn_b = _dyn(ctx)
        a_eff = _effective_a(a, transpose, dyn_a)
        if dyn_a:
            a3, b2, out_shape = _sample_operands(a_eff, b, output_rank(attrs, transpose), dyn_a, dyn_b)
            return ctx.xp.matmul(b2, a3).reshape(out_shape)
        a2, b2, out_shape = _operands(a_eff, b, output_rank(attrs, transpose), dyn_b)
        return ctx.xp.matmul(b2, a2).reshape(out_shape)

    def backward(ctx, xs, y, gy, attrs):
        a, b = xs
        dyn_a, dyn_b = _dyn(ctx)
        a_eff = _effective_a(a, transpose, dyn_a)
        if dyn_a:
            a3, b2, _ = _sample_operands(a_eff, b, output_rank(attrs, transpose), dyn_a, dyn_b)
            g3 = gy.reshape(a3.shape[0], -1, a3.shape[2])
            ga = ctx.xp.matmul(b2.swapaxes(-1, -2), g3)
            gb = ctx.xp.matmul(g3, a3.swapaxes(-1, -2))
            gb = gb.reshape(b.shape) if dyn_b else gb.sum(axis=0).reshape(b.shape)
        else:
            a2, b2, _ = _operands(a_eff, b, output_rank(attrs, transpose), dyn_b)
            g2 = gy.reshape(b2.shape[0], a2.shape[1])
            ga = ctx.xp.matmul(b2.T, g2)
            gb = ctx.xp.matmul(g2, a2.T).reshape(b.shape)
        ga = ga.reshape(a_eff.shape)
        if transpose:
            ga = ga.reshape(a.shape) if a.ndim - dyn_a == 1 else ga.swapaxes(-1, -2)
        return [ga, gb]

    return forward, backward


def _w(shape):
    return InputSpec(shape, dyn=0)


def _x(shape, dyn=1):
    return InputSpec(shape, dyn=dyn)


_times_forward, _times_backward = _make_times(False)
_ttimes_forward, _ttimes_backward = _make_times(True)

register(OpDef(
    name="Times", arity=(2, 2), shape=times_rule, forward=_times_forward, backward=_times_backward,
    layout=_product_layout("Times"), signature=TIMES_SIGNATURE, sparse_form="SparseTimes",
    doc="tensor product: A's first outputRank axes out, its other axes reduced against B's leading axes",
    checks=[
        OpCheck((_w((4, 3)), _x((3,))), out=(4,)),
        OpCheck((_w((4, 3)), _x((3,), 2)), out=(4,)),
        OpCheck((_w((2, 3, 4)), _x((3, 4, 2))), out=(2, 2)),
        OpCheck((_w((2, 3, 4)), _x((4, 2))), attrs={"outputRank": 2}, out=(2, 3, 2)),
        OpCheck((_w((4, 0)), _x((3, 2))), out=(4, 2)),
        OpCheck((_w((4, 0)), _x((2, 3, 2))), attrs={"inferInputRankToMap": 0}, out=(4,)),
        OpCheck((_w((4, 0)), _x((2, 3, 2))), attrs={"inferInputRankToMap": 1}, out=(4, 2)),
        OpCheck((_w((4, 6)), _x((2, 3, 5))), out=(4, 5)),           # legacy: 6 = 2·3
        OpCheck((_w((3, 2)), _w((2, 5))), out=(3, 5)),               # two static matrices
        OpCheck((_x((4, 3)), _w((3,))), out=(4,)),                   # a dynamic first operand
        OpCheck((_x((2, 1, 3), 2), _w((3,))), attrs={"outputRank": 2}, out=(2, 1)),
        OpCheck((_x((4, 3)), _x((3, 2))), out=(4, 2)),               # both dynamic: sample by sample
    ],
))

register(OpDef(
    name="TransposeTimes", arity=(2, 2), shape=_transpose_times_rule, forward=_ttimes_forward,
    backward=_ttimes_backward, layout=_product_layout("TransposeTimes"), sparse_form="SparseTransposeTimes",
    doc="Aᵀ·B for A of rank ≤ 2 (outputRank 1); a vector A is a column, so Aᵀ·B of vectors is a dot product",
    checks=[
        OpCheck((_w((3, 4)), _x((3,))), out=(4,)),
        OpCheck((_w((0, 4)), _x((3, 2), 2)), out=(4, 2)),
        OpCheck((_w((3,)), _x((3, 2))), out=(1, 2)),                  # a vector is a column [3 x 1]
        OpCheck((_x((3,)), _x((3,))), out=(1,)),                      # labels · z, sample by sample
    ],
))
