"""k-bit column quantisation with error feedback (1-bit SGD; reference/gpu.md §5.5, CNTK's quantiser).

    columns_of(array) -> (cols, rows) view        the CNTK matrix view of a parameter array
    quantize(values, residual, bits, zero_threshold) -> QuantizedColumns   (residual updated in place)
    dequantize(q) -> (cols, rows) array
    packed_size(rows, cols, bits, dtype) -> bytes on the wire
    QuantizedColumns.to_bytes() / QuantizedColumns.from_bytes(...)

The matrix view. CNTK quantises a gradient *matrix* column by column, and its matrices are
column-major with rows = the first BrainScript axis (a weight `(out:in)` has `out` rows and `in`
columns). netlang keeps a parameter as a row-major array with the BrainScript axes reversed, so in
memory the first BrainScript axis is the last, fastest array axis: a CNTK column is `rows`
consecutive elements. `columns_of` therefore reshapes the array to `(cols, rows)` — one CNTK column
per row of the view, no copy — with rows = the last array axis (1 for a scalar) and cols = the
product of the others. A weight `(200:784)` (array `[784, 200]`) has 784 columns of 200 values; a
bias `(200)` is one column of 200.

Per column, with V = values + residual (the error feedback):

* 1 bit, zero threshold (`useZeroThresholdFor1BitQuantization = true`, the default): bit = V >= 0;
  the two reconstruction values are the means of the negative and the non-negative entries
  (an empty group counts as size 1, so its value is 0).
* 1 bit, mean threshold: m = mean(V), bit = V >= m, reconstruction m -+ d with the tied radius
  d = (sum over V<m of (m - V) + sum over V>=m of (V - m)) / rows.
* k in {2, 4, 8} bits (CNTK's rule): the range [lower, upper] = mean -+ 5 standard deviations
  (population), split into L = 2^k equal bins; code q = floor((V - lower) * L / (upper - lower))
  clamped to [0, L-1]; reconstruction lower + (q + 1/2) * (upper - lower) / L. A column whose range
  is empty (all values equal) reconstructs to `lower`, i.e. to its mean.

Then Q = dequantised V and the residual becomes V - Q, so every component is applied eventually.

Numerics, so that a reference of these formulas reproduces the result bit for bit: column sums
are accumulated in float64 and the two per-column values are rounded once to the gradient's dtype
(that is what is transmitted); codes and reconstructions are computed in float64 from those
rounded values and rounded to the dtype at the end. V and the residual are in the gradient's dtype.

Wire format of one quantised matrix: the per-column value pairs (cols x 2 x itemsize bytes: for
1 bit the values of bit 0 and bit 1, for k bits lower and upper), then the codes, k bits each,
packed little-endian into bytes, ceil(rows * k / 8) bytes per column. A 1-bit column of n values
therefore costs ceil(n/8) bytes + two floats.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUPPORTED_BITS = (1, 2, 4, 8)
RANGE_STDDEVS = 5.0  # k > 1: the quantisation range is mean -+ this many standard deviations


def columns_of(array: np.ndarray) -> np.ndarray:
    """The `(cols, rows)` view of a parameter array: row c is CNTK column c (see module docstring)."""
    rows = array.shape[-1] if array.ndim else 1
    return array.reshape(-1, rows)


def column_dims(shape: tuple) -> tuple[int, int]:
    """(rows, cols) of the CNTK matrix of a parameter with run-time (row-major) shape `shape`."""
    rows = int(shape[-1]) if len(shape) else 1
    cols = 1
    for d in shape[:-1]:
        cols *= int(d)
    return rows, cols


def bytes_per_column(rows: int, bits: int) -> int:
    return (rows * bits + 7) // 8


def packed_size(rows: int, cols: int, bits: int, dtype) -> int:
    """Bytes of a quantised rows x cols matrix on the wire: codes plus two values per column."""
    return cols * (bytes_per_column(rows, bits) + 2 * np.dtype(dtype).itemsize)


@dataclass
class QuantizedColumns:
    """A quantised matrix: per-column value pairs and the packed codes."""

    bits: int
    rows: int
    levels: np.ndarray  # (cols, 2), gradient dtype
    codes: np.ndarray   # (cols, bytes_per_column(rows, bits)), uint8

    @property
    def cols(self) -> int:
        return self.levels.shape[0]

    @property
    def nbytes(self) -> int:
        return self.levels.nbytes + self.codes.nbytes

    def to_bytes(self) -> np.ndarray:
        return np.concatenate([self.levels.reshape(-1).view(np.uint8), self.codes.reshape(-1)])

    @classmethod
    def from_bytes(cls, buf: np.ndarray, rows: int, cols: int, bits: int, dtype) -> "QuantizedColumns":
        dtype = np.dtype(dtype)
        n_levels = cols * 2 * dtype.itemsize
        if buf.size != packed_size(rows, cols, bits, dtype):
            raise ValueError(f"a quantised {rows}x{cols} matrix at {bits} bits takes "
                             f"{packed_size(rows, cols, bits, dtype)} bytes, got {buf.size}")
        levels = buf[:n_levels].copy().view(dtype).reshape(cols, 2)
        codes = buf[n_levels:].reshape(cols, bytes_per_column(rows, bits))
        return cls(bits, rows, levels, codes)


def quantize(values: np.ndarray, residual: np.ndarray, bits: int,
             zero_threshold: bool = True) -> QuantizedColumns:
    """Quantise `values + residual` per column; `residual` becomes the new quantisation error.

    `values` and `residual` are `(cols, rows)` arrays of the same float dtype (see `columns_of`).
    """
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"quantisation to {bits} bits is not supported (use one of {SUPPORTED_BITS})")
    if values.ndim != 2 or values.shape != residual.shape or values.dtype != residual.dtype:
        raise ValueError(f"quantize takes (cols, rows) values and a residual of the same shape and "
                         f"dtype, got {values.shape} {values.dtype} and {residual.shape} {residual.dtype}")
    v = values + residual
    if bits == 1:
        codes, levels = _one_bit(v, zero_threshold)
    else:
        codes, levels = _k_bits(v, bits)
    q = QuantizedColumns(bits, v.shape[1], levels, _pack(codes, bits))
    np.subtract(v, _reconstruct(codes, levels, bits, v.dtype), out=residual)
    return q


def dequantize(q: QuantizedColumns) -> np.ndarray:
    """The `(cols, rows)` values a quantised matrix stands for."""
    return _reconstruct(_unpack(q.codes, q.bits, q.rows), q.levels, q.bits, q.levels.dtype)


# ---- the two quantisers ------------------------------------------------------------------------


def _one_bit(v: np.ndarray, zero_threshold: bool):
    rows = v.shape[1]
    if zero_threshold:
        ones = v >= 0
        n1 = np.count_nonzero(ones, axis=1)
        # max(V, 0) / min(V, 0) hold exactly the non-negative / negative entries (and zeros,
        # which do not change a sum): cheaper than masking, same values.
        mean1 = np.maximum(v, 0).sum(axis=1, dtype=np.float64) / np.maximum(n1, 1)
        mean0 = np.minimum(v, 0).sum(axis=1, dtype=np.float64) / np.maximum(rows - n1, 1)
        levels = np.stack([mean0, mean1], axis=1)
    else:
        mean = v.sum(axis=1, dtype=np.float64) / rows
        deviation = v - mean[:, None]  # float64
        ones = deviation >= 0
        radius = np.abs(deviation).sum(axis=1) / rows
        levels = np.stack([mean - radius, mean + radius], axis=1)
    return ones.view(np.uint8), levels.astype(v.dtype)


def _k_bits(v: np.ndarray, bits: int):
    rows = v.shape[1]
    v64 = v.astype(np.float64)
    mean = v64.sum(axis=1) / rows
    stddev = np.sqrt(np.square(v64 - mean[:, None]).sum(axis=1) / rows)
    levels = np.stack([mean - RANGE_STDDEVS * stddev, mean + RANGE_STDDEVS * stddev],
                      axis=1).astype(v.dtype)
    lower, width = _range(levels)
    n_bins = 1 << bits
    # An empty range (all values equal) gets scale 0: every value takes code 0 (CNTK does the same).
    scale = np.divide(n_bins, width, out=np.zeros_like(width), where=width > 0)
    scaled = v64
    scaled -= lower
    scaled *= scale
    np.floor(scaled, out=scaled)
    np.clip(scaled, 0, n_bins - 1, out=scaled)
    with np.errstate(invalid="ignore"):  # NaN gradients stay garbage, but quietly
        return scaled.astype(np.uint8), levels


def _range(levels: np.ndarray):
    lower = levels[:, :1].astype(np.float64)
    return lower, levels[:, 1:].astype(np.float64) - lower


def _reconstruct(codes: np.ndarray, levels: np.ndarray, bits: int, dtype) -> np.ndarray:
    """Value of every code: a per-column table of the 2^bits values, then a gather (exact)."""
    if bits == 1:
        table = levels
    else:
        lower, width = _range(levels)
        n_bins = 1 << bits
        table = (lower + (np.arange(n_bins) + 0.5) * (width / n_bins)).astype(dtype)
    index = codes + table.shape[1] * np.arange(codes.shape[0], dtype=np.int32)[:, None]
    return table.reshape(-1)[index].astype(dtype, copy=False)


# ---- bit packing -----------------------------------------------------------------------------


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """(cols, rows) codes < 2^bits → (cols, ceil(rows*bits/8)) bytes, first code in the low bits."""
    if bits == 8:
        return codes
    if bits == 1:
        return np.packbits(codes, axis=1, bitorder="little")
    per_byte = 8 // bits
    cols, rows = codes.shape
    padded = np.zeros((cols, bytes_per_column(rows, bits) * per_byte), dtype=np.uint8)
    padded[:, :rows] = codes
    packed = padded[:, 0::per_byte].copy()
    for i in range(1, per_byte):
        packed |= padded[:, i::per_byte] << np.uint8(bits * i)
    return packed


def _unpack(packed: np.ndarray, bits: int, rows: int) -> np.ndarray:
    if bits == 8:
        return packed
    if bits == 1:
        return np.unpackbits(packed, axis=1, count=rows, bitorder="little")
    per_byte = 8 // bits
    codes = np.empty((packed.shape[0], packed.shape[1] * per_byte), dtype=np.uint8)
    for i in range(per_byte):
        codes[:, i::per_byte] = (packed >> np.uint8(bits * i)) & np.uint8((1 << bits) - 1)
    return codes[:, :rows]
