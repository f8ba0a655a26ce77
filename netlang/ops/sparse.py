"""Sparse inputs: one-hot words and other sparse streams stay sparse; a product with them is a gather.

At run time a sparse input is a `SparseRows`: CSR over its samples ("rows": `indices`, `values`,
`offsets` with rows + 1 entries) plus the dynamic axes the rows fill — `(T, N)` for sequences, row
t·N + n, as `StreamBatch.padded_csr()` returns them; `(N,)` for a batch — and the run-time sample
shape. Element indices count over the flattened sample.

`Times(W, x)` (and `TransposeTimes`) with x a sparse input is compiled to `SparseTimes`
(`SparseTransposeTimes`, their OpDefs' `sparse_form`) by compiler/graph/network.py: one row of W's run-time array per non-zero,
weighted by its value and summed per sample — a gather, never a dense product with a 10k-wide
one-hot matrix. The gradient with respect to W is a scatter-add into the rows that were read. The
kernels (`sparse_operands=True`) also accept a dense array (the dense fallback: it is converted to
CSR first); any other op that meets a sparse value gets it densified once (`SparseRows.dense`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netlang.ir.shapes import num_elements
from netlang.ops.linalg import (
    TIMES_SIGNATURE,
    _effective_a,
    _times_backward,
    _times_forward,
    _ttimes_backward,
    _ttimes_forward,
    output_rank,
    times_rule,
)
from netlang.ops.registry import InputSpec, OpCheck, OpDef, register


@dataclass(eq=False)
class SparseRows:
    """CSR rows of a sparse value: row r holds `indices[offsets[r]:offsets[r+1]]` (and values)."""

    indices: Any
    values: Any
    offsets: Any
    lead: tuple                 # dynamic axes: (T, N) or (N,)
    sample: tuple               # run-time (row-major) sample shape
    most_per_row: int | None = None   # the most non-zeros of a row, when known without asking the device
    nonzero_rows: Any = None          # the row of each non-zero, when counted on the host
    _dense: dict = field(default_factory=dict, repr=False)

    @property
    def rows(self) -> int:
        return num_elements(self.lead)

    @property
    def row_size(self) -> int:
        return num_elements(self.sample)

    @property
    def shape(self) -> tuple:
        return tuple(self.lead) + tuple(self.sample)

    def row_of_nonzero(self, xp):
        if self.nonzero_rows is not None:
            return self.nonzero_rows
        return xp.repeat(xp.arange(self.rows), xp.diff(self.offsets))

    def dense(self, backend, dtype):
        """The dense array `lead + sample` (computed once per dtype)."""
        xp = backend.xp
        key = xp.dtype(dtype).str
        if key not in self._dense:
            out = xp.zeros((self.rows, self.row_size), dtype=dtype)
            backend.scatter_add(out, (self.row_of_nonzero(xp), self.indices), self.values.astype(dtype, copy=False))
            self._dense[key] = out.reshape(self.shape)
        return self._dense[key]

    def select(self, rows, xp) -> "SparseRows":
        """Rows `rows` (indices, in that order) as a batch: frame mode packs the steps of sequences."""
        counts = xp.diff(self.offsets)[rows]
        starts = self.offsets[:-1][rows]
        offsets = xp.concatenate([xp.zeros(1, dtype=counts.dtype), xp.cumsum(counts)])
        # Non-zero j of the result is non-zero (j - offsets[r]) of source row rows[r].
        take = xp.repeat(starts - offsets[:-1], counts) + xp.arange(int(offsets[-1]))
        return SparseRows(self.indices[take], self.values[take], offsets, (len(rows),), self.sample)

    @classmethod
    def from_dense(cls, x, dyn: int, xp) -> "SparseRows":
        lead, sample = tuple(x.shape[:dyn]), tuple(x.shape[dyn:])
        flat = x.reshape(num_elements(lead), -1)
        rows, cols = xp.nonzero(flat)
        offsets = xp.concatenate([xp.zeros(1, dtype="int64"),
                                  xp.cumsum(xp.bincount(rows, minlength=flat.shape[0]))])
        return cls(cols, flat[rows, cols], offsets, lead, sample)


def as_sparse(x, dyn: int, xp) -> SparseRows:
    return x if isinstance(x, SparseRows) else SparseRows.from_dense(x, dyn, xp)


def densified(value, backend, dtype):
    """What an op without a sparse kernel gets for `value`."""
    return value.dense(backend, dtype) if isinstance(value, SparseRows) else value


# ---- SparseTimes / SparseTransposeTimes --------------------------------------------------------

def _weight_rows(a, transpose: bool, attrs):
    """W's run-time array as (K, M): row k is what one unit of sample element k contributes."""
    a_eff = _effective_a(a, transpose)
    num_reduce = a_eff.ndim - output_rank(attrs, transpose)
    return a_eff.reshape(num_elements(a_eff.shape[:num_reduce]), -1), a_eff.shape[num_reduce:], a_eff


def _gather(weights, rows: SparseRows, backend):
    """Σ over each row's non-zeros of value · weights[index]: (rows, M)."""
    xp = backend.xp
    contrib = weights[rows.indices] * rows.values.astype(weights.dtype, copy=False)[:, None]
    out = xp.zeros((rows.rows, weights.shape[1]), dtype=weights.dtype)
    most = rows.most_per_row
    if most is None and rows.rows:
        most = int(xp.diff(rows.offsets).max())
    if rows.rows and most <= 1:      # one-hot rows (padding: none): a plain gather
        out[rows.row_of_nonzero(xp)] = contrib
    else:
        backend.scatter_add(out, rows.row_of_nonzero(xp), contrib)
    return out


def _make_sparse_product(transpose: bool):
    dense_forward = _ttimes_forward if transpose else _times_forward

    def forward(ctx, xs, attrs):
        a, b = xs
        weights, out_axes, _ = _weight_rows(a, transpose, attrs)
        rows = as_sparse(b, ctx.dyn[1], ctx.xp)
        if weights.shape[0] != rows.row_size:     # a product that keeps some of x's axes: dense
            return dense_forward(ctx, [a, densified(rows, ctx.backend, a.dtype)], attrs)
        return _gather(weights, rows, ctx.backend).reshape(tuple(rows.lead) + tuple(out_axes))

    def backward(ctx, xs, y, gy, attrs):
        a, b = xs
        xp = ctx.xp
        weights, _, a_eff = _weight_rows(a, transpose, attrs)
        rows = as_sparse(b, ctx.dyn[1], xp)
        if weights.shape[0] != rows.row_size:
            dense_backward = _ttimes_backward if transpose else _times_backward
            return [dense_backward(ctx, [a, densified(rows, ctx.backend, a.dtype)], y, gy, attrs)[0], None]
        g2 = gy.reshape(rows.rows, -1)
        contrib = g2[rows.row_of_nonzero(xp)] * rows.values.astype(g2.dtype, copy=False)[:, None]
        grad = xp.zeros_like(weights)
        ctx.backend.scatter_add(grad, rows.indices, contrib)
        grad = grad.reshape(a_eff.shape)
        if transpose:
            grad = grad.reshape(a.shape) if a.ndim == 1 else grad.T
        return [grad, None]

    return forward, backward


def _static(shape):
    return InputSpec(shape, dyn=0)


def _onehot(shape, dyn=2):
    return InputSpec(shape, dyn, "onehot", grad=False)


_fwd, _bwd = _make_sparse_product(False)
register(OpDef(
    name="SparseTimes", arity=(2, 2), shape=times_rule, forward=_fwd, backward=_bwd,
    layout=lambda inputs, attrs: getattr(inputs[1], "layout", inputs[1]), sparse_operands=True,
    signature=TIMES_SIGNATURE,
    doc="Times(W, x) for a sparse x: a gather of W's columns (gradient: scatter-add)",
    checks=[
        OpCheck((_static((4, 0)), _onehot((5,))), out=(4,)),
        OpCheck((_static((3, 6)), _onehot((6,), 1)), out=(3,)),
        OpCheck((_static((2, 3, 0)), _onehot((5,), 1)), attrs={"outputRank": 2}, out=(2, 3)),
        OpCheck((_static((3, 4)), InputSpec((4,), 1, "binary", grad=False)), out=(3,)),
    ],
))

_fwd, _bwd = _make_sparse_product(True)
register(OpDef(
    name="SparseTransposeTimes", arity=(2, 2), shape=lambda s, a: times_rule(s, a, transpose=True),
    forward=_fwd, backward=_bwd, layout=lambda inputs, attrs: getattr(inputs[1], "layout", inputs[1]),
    sparse_operands=True,
    doc="TransposeTimes(E, x) for a sparse x: a gather of E's rows (gradient: scatter-add)",
    checks=[
        OpCheck((_static((5, 3)), _onehot((5,))), out=(3,)),
        OpCheck((_static((0, 2)), _onehot((4,), 1)), out=(2,)),
    ],
))
