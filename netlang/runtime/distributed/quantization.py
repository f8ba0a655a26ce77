"""k-bit column quantisation with error feedback (1-bit SGD; reference/gpu.md §5.5, CNTK's quantiser).

    columns_of(array) -> (cols, rows) view        the CNTK matrix view of a parameter array
    quantize(values, residual, bits, zero_threshold) -> QuantizedColumns   (residual updated in place)
    dequantize(q) -> (cols, rows) array
    packed_size(rows, cols, bits, dtype) -> bytes on the wire
    QuantizedColumns.write_records(region) / QuantizedColumns.from_records(region, rows, bits, dtype)
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
A 1-bit reconstruction is one of the column's two values, picked by integer bit operations on
their bit patterns (a select without branches: NumPy's `where` on random bits is several times
slower).

Speed: every step runs over whole matrices as array operations — no Python loop per column, per
value or per stripe — on NumPy arrays or, for gradients on a GPU, CuPy arrays: the functions take
the array module of their arguments (runtime/backend.array_module), and use only what both
provide (bit packing over a flattened array, `view`, shifts, masks, reductions with a dtype).

Wire format of one quantised matrix: one record per column, `cols` records of
2 x itemsize + ceil(rows * k / 8) bytes: the column's two values (for 1 bit the values of bit 0
and bit 1, for k bits lower and upper), then its codes, k bits each, packed little-endian into
bytes. A 1-bit column of n values therefore costs ceil(n/8) bytes + two floats. Records of
consecutive columns are consecutive bytes, so a range of columns (a stripe) is a range of bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netlang.runtime.backend import array_module

SUPPORTED_BITS = (1, 2, 4, 8)
RANGE_STDDEVS = 5.0  # k > 1: the quantisation range is mean -+ this many standard deviations
_BIT_PATTERN = {4: np.int32, 8: np.int64}   # float itemsize -> the integer type of its bits


def columns_of(array):
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


def record_size(rows: int, bits: int, dtype) -> int:
    """Bytes of one column on the wire: its two values and its packed codes."""
    return 2 * np.dtype(dtype).itemsize + bytes_per_column(rows, bits)


def packed_size(rows: int, cols: int, bits: int, dtype) -> int:
    """Bytes of a quantised rows x cols matrix on the wire: codes plus two values per column."""
    return cols * record_size(rows, bits, dtype)


@dataclass
class QuantizedColumns:
    """A quantised matrix: per-column value pairs and the packed codes."""

    bits: int
    rows: int
    levels: object  # (cols, 2), gradient dtype
    codes: object   # (cols, bytes_per_column(rows, bits)), uint8 (may be a view into records)

    @property
    def cols(self) -> int:
        return self.levels.shape[0]

    @property
    def nbytes(self) -> int:
        return self.cols * (self.levels.shape[1] * self.levels.itemsize + self.codes.shape[1])

    def write_records(self, region) -> None:
        """Write the records into `region`, a (cols, record size) uint8 array."""
        width = 2 * self.levels.itemsize
        region[:, :width] = self.levels.view(np.uint8)
        region[:, width:] = self.codes

    def to_bytes(self):
        xp = array_module(self.codes)
        region = xp.empty((self.cols, record_size(self.rows, self.bits, self.levels.dtype)), dtype=np.uint8)
        self.write_records(region)
        return region.reshape(-1)

    @classmethod
    def from_records(cls, region, rows: int, bits: int, dtype) -> QuantizedColumns:
        """The matrix whose records are `region`, a (cols, record size) uint8 array (not copied
        but for the values)."""
        dtype = np.dtype(dtype)
        width = 2 * dtype.itemsize
        if region.shape[1] != record_size(rows, bits, dtype):
            raise ValueError(f"a {rows}-row column at {bits} bits takes {record_size(rows, bits, dtype)} "
                             f"bytes, the records have {region.shape[1]}")
        levels = array_module(region).ascontiguousarray(region[:, :width]).view(dtype)
        return cls(bits, rows, levels, region[:, width:])

    @classmethod
    def from_bytes(cls, buf, rows: int, cols: int, bits: int, dtype) -> QuantizedColumns:
        if buf.size != packed_size(rows, cols, bits, dtype):
            raise ValueError(f"a quantised {rows}x{cols} matrix at {bits} bits takes "
                             f"{packed_size(rows, cols, bits, dtype)} bytes, got {buf.size}")
        return cls.from_records(buf.reshape(cols, record_size(rows, bits, dtype)), rows, bits, dtype)


def quantize(values, residual, bits: int, zero_threshold: bool = True) -> QuantizedColumns:
    """Quantise `values + residual` per column; `residual` becomes the new quantisation error.

    `values` and `residual` are `(cols, rows)` arrays of the same float dtype (see `columns_of`).
    """
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"quantisation to {bits} bits is not supported (use one of {SUPPORTED_BITS})")
    if values.ndim != 2 or values.shape != residual.shape or values.dtype != residual.dtype:
        raise ValueError(f"quantize takes (cols, rows) values and a residual of the same shape and "
                         f"dtype, got {values.shape} {values.dtype} and {residual.shape} {residual.dtype}")
    xp = array_module(values)
    v = residual
    v += values                      # V, formed in the residual's memory: it is overwritten below
    if bits == 1:
        ones, levels = _one_bit(xp, v, zero_threshold)
        v -= _select(xp, ones, levels)
        return QuantizedColumns(1, v.shape[1], levels, _pack(xp, ones, 1))
    codes, levels = _k_bits(xp, v, bits)
    packed = _pack(xp, codes.astype(np.uint8), bits)
    v -= _k_bit_values(xp, codes, levels, bits, v.dtype)
    return QuantizedColumns(bits, v.shape[1], levels, packed)


def dequantize(q: QuantizedColumns):
    """The `(cols, rows)` values a quantised matrix stands for."""
    xp = array_module(q.codes)
    codes = _unpack(xp, q.codes, q.bits, q.rows)
    if q.bits == 1:
        return _select(xp, codes, q.levels)
    return _k_bit_values(xp, codes.astype(np.float64), q.levels, q.bits, q.levels.dtype)


# ---- the two quantisers ------------------------------------------------------------------------


def _one_bit(xp, v, zero_threshold: bool):
    """(bits as a bool array, per-column values (cols, 2)) of 1-bit quantisation."""
    rows = v.shape[1]
    if zero_threshold:
        ones = v >= 0
        n1 = ones.sum(axis=1, dtype=np.int32)
        # max(V, 0) / min(V, 0) hold exactly the non-negative / negative entries (and zeros,
        # which do not change a sum): cheaper than masking, same values.
        mean1 = xp.maximum(v, 0).sum(axis=1, dtype=np.float64) / xp.maximum(n1, 1)
        mean0 = xp.minimum(v, 0).sum(axis=1, dtype=np.float64) / xp.maximum(rows - n1, 1)
        levels = xp.stack([mean0, mean1], axis=1)
    else:
        mean = v.sum(axis=1, dtype=np.float64) / rows
        deviation = v - mean[:, None]  # float64
        ones = deviation >= 0
        radius = xp.abs(deviation).sum(axis=1) / rows
        levels = xp.stack([mean - radius, mean + radius], axis=1)
    return ones, levels.astype(v.dtype)


def _select(xp, ones, levels):
    """levels[c, 1] where `ones[c, i]` else levels[c, 0], exactly, as (cols, rows) values.

    On the bit patterns: low ^ (bit * (low ^ high)) is `low` for bit 0 and `high` for bit 1."""
    pattern = _BIT_PATTERN[levels.itemsize]
    bits = levels.view(pattern)
    low = bits[:, 0:1]
    picked = xp.multiply(ones, low ^ bits[:, 1:2], dtype=pattern)
    picked ^= low
    return picked.view(levels.dtype)


def _k_bits(xp, v, bits: int):
    """(codes as float64 bin numbers, per-column [lower, upper]) of k-bit quantisation."""
    rows = v.shape[1]
    v64 = v.astype(np.float64)
    mean = v64.sum(axis=1) / rows
    stddev = xp.sqrt(xp.square(v64 - mean[:, None]).sum(axis=1) / rows)
    levels = xp.stack([mean - RANGE_STDDEVS * stddev, mean + RANGE_STDDEVS * stddev],
                      axis=1).astype(v.dtype)
    lower, width = _range(levels)
    n_bins = 1 << bits
    # An empty range (all values equal) gets scale 0: every value takes code 0 (CNTK does the same).
    scale = xp.where(width > 0, n_bins / xp.where(width > 0, width, 1.0), 0.0)
    codes = v64
    codes -= lower
    codes *= scale
    xp.floor(codes, out=codes)
    xp.fmax(codes, 0, out=codes)          # fmax, not maximum: a NaN gradient becomes code 0
    xp.minimum(codes, n_bins - 1, out=codes)
    return codes, levels


def _k_bit_values(xp, codes, levels, bits: int, dtype):
    """lower + (q + 1/2) * (width / L) per value, from float64 codes (overwritten)."""
    lower, width = _range(levels)
    values = codes
    values += 0.5
    values *= width / (1 << bits)
    values += lower
    return values.astype(dtype)


def _range(levels):
    lower = levels[:, :1].astype(np.float64)
    return lower, levels[:, 1:].astype(np.float64) - lower


# ---- bit packing -----------------------------------------------------------------------------


def _pack(xp, codes, bits: int):
    """(cols, rows) codes < 2^bits → (cols, ceil(rows*bits/8)) bytes, first code in the low bits.

    Each column is padded to whole bytes, so packing the flattened array packs every column on
    its own (CuPy packs only flattened arrays)."""
    cols, rows = codes.shape
    per_byte = 8 // bits
    width = bytes_per_column(rows, bits)
    if rows != width * per_byte:
        padded = xp.zeros((cols, width * per_byte), dtype=codes.dtype)
        padded[:, :rows] = codes
        codes = padded
    if bits == 8:
        return codes
    if bits == 1:
        return xp.packbits(codes.reshape(-1), bitorder="little").reshape(cols, width)
    packed = codes[:, 0::per_byte].copy()
    for lane in range(1, per_byte):        # 2 or 4 lanes: one shift per code position in a byte
        packed |= codes[:, lane::per_byte] << np.uint8(bits * lane)
    return packed


def _unpack(xp, packed, bits: int, rows: int):
    """(cols, bytes) packed codes → (cols, rows) uint8 codes (a view when nothing was packed)."""
    if bits == 8:
        return packed[:, :rows]
    cols, width = packed.shape
    if bits == 1:
        return xp.unpackbits(xp.ascontiguousarray(packed).reshape(-1),
                             bitorder="little").reshape(cols, width * 8)[:, :rows]
    per_byte = 8 // bits
    codes = xp.empty((cols, width * per_byte), dtype=np.uint8)
    mask = np.uint8((1 << bits) - 1)
    for lane in range(per_byte):
        codes[:, lane::per_byte] = (packed >> np.uint8(bits * lane)) & mask
    return codes[:, :rows]
