"""Gradient aggregation for DataParallelSGD: full-precision all-reduce or k-bit striped exchange.

    agg = GradientAggregator(comm, segments, size, dtype, bits=32, zero_threshold=True)
    global_samples = agg.aggregate(flat_grad, mb_samples)   # flat_grad becomes the SUM over ranks
    agg.bits = 1                                             # gradientBits is a per-epoch schedule
    agg.state() / agg.load_state(state)                      # both residuals, for checkpoints

`segments` lists every parameter in the flat gradient buffer as `(offset, run-time shape)`; with
`FlatParameters` that is `[(fp.offset(n), fp.shape(n)) for n in fp.trainable_names]` and
`flat_grad = fp.grad[fp.trainable]`. The result is the sum of all ranks' gradients (CNTK sums;
the learner's per-sample learning rate is applied to the global minibatch, whose sample count
`aggregate` returns). Elements of `flat_grad` outside the segments are left alone.

`bits >= 8 * itemsize` (32 for float, 64 for double; CNTK's default) is one in-place all-reduce of
the whole buffer. `bits` in {1, 2, 4, 8} is the scheme of reference/gpu.md §5.5 (CNTK's
AllReduceDistGradAggregator), on the matrix view of quantization.py:

1. every rank quantises each gradient matrix (+ its residual, the error feedback) per column;
2. the columns of every matrix are cut into K contiguous stripes (rank r owns floor(n/K) columns,
   one more for the first n mod K ranks); rank r receives everyone's quantised stripe r
   (all-to-all), dequantises and sums the K contributions in rank order;
3. rank r re-quantises that sum with a *second* residual, kept for its stripe only;
4. the re-quantised stripes are all-gathered and every rank dequantises all of them, so every
   rank ends with the same aggregate, bit for bit.

With K = 1 the k-bit scheme still runs (both quantisation steps), which is only useful to study
quantisation; the trainer does not aggregate at all with one worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from netlang.errors import ConfigError
from netlang.runtime.distributed.comm import Communicator
from netlang.runtime.distributed.quantization import (
    SUPPORTED_BITS,
    QuantizedColumns,
    column_dims,
    dequantize,
    packed_size,
    quantize,
)


@dataclass(frozen=True)
class _Matrix:
    """One parameter's gradient as a CNTK matrix in the flat buffer, and its column stripes."""

    offset: int
    rows: int
    cols: int
    stripe_starts: tuple  # K + 1 column indices: rank r owns [stripe_starts[r], stripe_starts[r+1])

    def stripe(self, rank: int) -> tuple[int, int]:
        return self.stripe_starts[rank], self.stripe_starts[rank + 1]

    def columns(self, flat: np.ndarray) -> np.ndarray:
        return flat[self.offset:self.offset + self.rows * self.cols].reshape(self.cols, self.rows)


def stripe_starts(cols: int, size: int) -> tuple:
    """Column boundaries of K = `size` stripes: floor(n/K) each, +1 for the first n mod K ranks."""
    base, extra = divmod(cols, size)
    starts = [0]
    for r in range(size):
        starts.append(starts[-1] + base + (1 if r < extra else 0))
    return tuple(starts)


class GradientAggregator:
    """Sums the gradients of all ranks in place (see the module docstring)."""

    def __init__(self, comm: Communicator, segments: Sequence[tuple[int, tuple]], size: int,
                 dtype="float32", bits: int = 32, zero_threshold: bool = True):
        self.comm = comm
        self.dtype = np.dtype(dtype)
        self.size = int(size)
        self.zero_threshold = zero_threshold
        self._matrices = [_Matrix(int(off), *column_dims(tuple(shape)),
                                  stripe_starts(column_dims(tuple(shape))[1], comm.size))
                          for off, shape in segments]
        for m in self._matrices:
            if m.offset < 0 or m.offset + m.rows * m.cols > self.size:
                raise ValueError(f"segment at {m.offset} with {m.rows * m.cols} elements lies "
                                 f"outside the gradient buffer of {self.size}")
        self.residual = np.zeros(self.size, dtype=self.dtype)
        self.stripe_residual = np.zeros(self._stripe_length(comm.rank), dtype=self.dtype)
        self.bits = bits

    # ---- gradientBits ------------------------------------------------------------------------

    @property
    def bits(self) -> int:
        return self._bits

    @bits.setter
    def bits(self, bits: int) -> None:
        bits = int(bits)
        if bits not in SUPPORTED_BITS and bits not in (32, 64):
            raise ConfigError(f"gradientBits = {bits} is not supported", key="gradientBits",
                              hint=f"use 1, 2, 4 or 8 for quantised aggregation, or "
                                   f"{8 * self.dtype.itemsize} (the default) for full precision")
        self._bits = bits

    @property
    def full_precision(self) -> bool:
        return self._bits >= 8 * self.dtype.itemsize

    # ---- the step --------------------------------------------------------------------------------

    def aggregate(self, flat_grad: np.ndarray, mb_samples: int) -> int:
        """Replace `flat_grad` by the sum over all ranks; return the global minibatch's samples."""
        if flat_grad.dtype != self.dtype or flat_grad.shape != (self.size,):
            raise ValueError(f"expected a {self.dtype} gradient of {self.size} elements, got "
                             f"{flat_grad.dtype} {flat_grad.shape}")
        samples = np.array([mb_samples], dtype=np.float64)
        self.comm.allreduce_sum(samples)
        if self.full_precision:
            self.comm.allreduce_sum(flat_grad)
        else:
            self._aggregate_quantized(flat_grad)
        return int(round(samples[0]))

    def _aggregate_quantized(self, grad: np.ndarray) -> None:
        size, me = self.comm.size, self.comm.rank
        # 1. quantise the local gradient (error feedback: self.residual); chunk r is stripe r.
        chunks: list[list[np.ndarray]] = [[] for _ in range(size)]
        for m in self._matrices:
            q = quantize(m.columns(grad), m.columns(self.residual), self._bits, self.zero_threshold)
            for r in range(size):
                chunks[r].append(_slice_columns(q, *m.stripe(r)).to_bytes())
        send = [_concat(parts) for parts in chunks]
        received = self.comm.alltoallv(send, [self._stripe_bytes(me)] * size)

        # 2. own stripe: sum the K contributions in rank order, 3. re-quantise (second residual).
        total = self._decode_stripe(received[0], me)
        for part in received[1:]:
            total += self._decode_stripe(part, me)
        reduced = self._encode_stripe(total, me)

        # 4. everyone gets every re-quantised stripe and writes the aggregate into `grad`.
        counts = [self._stripe_bytes(r) for r in range(size)]
        gathered = self.comm.allgatherv(reduced, counts)
        start = 0
        for r, count in enumerate(counts):
            self._write_stripe(self._decode_stripe(gathered[start:start + count], r), r, grad)
            start += count

    # ---- stripes ------------------------------------------------------------------------------

    def _stripe_length(self, rank: int) -> int:
        return sum(m.rows * (m.stripe(rank)[1] - m.stripe(rank)[0]) for m in self._matrices)

    def _stripe_bytes(self, rank: int) -> int:
        return sum(packed_size(m.rows, m.stripe(rank)[1] - m.stripe(rank)[0], self._bits, self.dtype)
                   for m in self._matrices)

    def _decode_stripe(self, buf: np.ndarray, rank: int) -> np.ndarray:
        """Dequantise stripe `rank` (all matrices' columns in it) into one flat array."""
        out = np.empty(self._stripe_length(rank), dtype=self.dtype)
        pos = nbyte = 0
        for m in self._matrices:
            c0, c1 = m.stripe(rank)
            nbytes = packed_size(m.rows, c1 - c0, self._bits, self.dtype)
            q = QuantizedColumns.from_bytes(buf[nbyte:nbyte + nbytes], m.rows, c1 - c0,
                                            self._bits, self.dtype)
            out[pos:pos + m.rows * (c1 - c0)] = dequantize(q).reshape(-1)
            pos += m.rows * (c1 - c0)
            nbyte += nbytes
        return out

    def _encode_stripe(self, values: np.ndarray, rank: int) -> np.ndarray:
        """Quantise this rank's summed stripe with the stripe residual, as bytes for the wire."""
        parts, pos = [], 0
        for m in self._matrices:
            c0, c1 = m.stripe(rank)
            n = m.rows * (c1 - c0)
            shape = (c1 - c0, m.rows)
            q = quantize(values[pos:pos + n].reshape(shape),
                         self.stripe_residual[pos:pos + n].reshape(shape),
                         self._bits, self.zero_threshold)
            parts.append(q.to_bytes())
            pos += n
        return _concat(parts)

    def _write_stripe(self, values: np.ndarray, rank: int, grad: np.ndarray) -> None:
        pos = 0
        for m in self._matrices:
            c0, c1 = m.stripe(rank)
            n = m.rows * (c1 - c0)
            m.columns(grad)[c0:c1] = values[pos:pos + n].reshape(c1 - c0, m.rows)
            pos += n

    # ---- checkpoints --------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """This rank's error-feedback state (it differs between ranks)."""
        return {"residual": self.residual.copy(), "stripe_residual": self.stripe_residual.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for name in ("residual", "stripe_residual"):
            target = getattr(self, name)
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(f"{name} in the checkpoint has shape {value.shape}, this job "
                                 f"needs {target.shape} (was the number of workers changed?)")
            target[...] = value


def _slice_columns(q: QuantizedColumns, c0: int, c1: int) -> QuantizedColumns:
    return QuantizedColumns(q.bits, q.rows, q.levels[c0:c1], q.codes[c0:c1])


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
