"""Gradient aggregation for DataParallelSGD: full-precision all-reduce or k-bit striped exchange,
bucket by bucket, overlapped with the backward pass.

    agg = GradientAggregator(comm, segments, size, dtype, bits=32, zero_threshold=True)
    global_samples = agg.aggregate(flat_grad, mb_samples)   # flat_grad becomes the SUM over ranks
    # the same, overlapped with backward:
    agg.begin(flat_grad)
    agg.segment_ready(i)                      # segment i's gradient is final (in any order)
    global_samples = agg.finish(mb_samples)   # what is left starts, everything is waited for
    agg.bits = 1                              # gradientBits is a per-epoch schedule
    agg.state() / agg.load_state(state)       # both residuals, for checkpoints

`segments` lists every parameter in the flat gradient buffer as `(offset, run-time shape)`; with
`FlatParameters` that is `[(fp.offset(n), fp.shape(n)) for n in fp.trainable_names]` and
`flat_grad = fp.grad[fp.trainable]`. The result is the sum of all ranks' gradients (CNTK sums;
the learner's per-sample learning rate is applied to the global minibatch, whose sample count
`finish` returns, exchanged with the gradient). `bits` is 1, 2, 4 or 8 for quantised
aggregation; any other value (the schema allows only these and >= 32) is full precision.

Buckets. The segments are grouped, from the last one back (the order in which backward finishes
the gradients of a chain of layers), into buckets of up to `bucket_bytes` of gradient (a larger
segment is a bucket of its own); a bucket is a contiguous range of segments. A bucket starts as
soon as all its gradients are final, but never before the buckets ahead of it: all ranks must
start collectives in the same order, and the order of `segment_ready` calls may differ between
ranks (a rank with an empty share of the minibatch calls none). Everything is waited for in
`finish`, just before the update.

Full precision: one non-blocking in-place all-reduce per bucket, on a contiguous slice of the
flat buffer (the slices cover the whole buffer, elements between segments included).

k-bit (`bits` in {1, 2, 4, 8}), the scheme of reference/gpu.md §5.5 (CNTK's
AllReduceDistGradAggregator) on the matrix view of quantization.py, per bucket:

1. every rank quantises each gradient matrix (+ its residual, the error feedback) per column,
   into per-column records in buffer order;
2. the bucket's columns are cut into K contiguous stripes of about equal numbers of values
   (CNTK's rule, `stripe_starts`, on the values, moved to whole columns); rank r owns stripe r.
   The records of a stripe are one byte range, so one all-to-all gives rank r every rank's stripe r;
3. rank r dequantises the K contributions at once, sums them in rank order and re-quantises the
   sum with a *second* residual, kept for its stripes only;
4. the re-quantised stripes are all-gathered: every rank holds all of the bucket's records and
   dequantises them into `flat_grad`, so every rank ends with the same aggregate, bit for bit.

Steps 1-2 run when the bucket starts, 3 when the next bucket starts (or in `finish`), 4 in
`finish`. CNTK cuts every matrix into stripes; cutting the bucket instead changes no number (a
column's second residual lives with whichever rank owns the column) and keeps every stripe in one
piece. With K = 1 the k-bit scheme still runs (both quantisation steps), which is only useful to
study quantisation; the trainer does not aggregate at all with one worker.

Where the arrays live: the gradient and the residuals are the backend's arrays (NumPy, or CuPy on
a GPU), and quantisation runs there; only the packed records (or, at full precision, the bucket)
pass through host memory for MPI (reference/gpu.md §5.2's fallback until a NCCL communicator).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from netlang.runtime.backend import Backend, NumpyBackend
from netlang.runtime.distributed.comm import Communicator
from netlang.runtime.distributed.quantization import (
    SUPPORTED_BITS,
    QuantizedColumns,
    column_dims,
    dequantize,
    quantize,
    record_size,
)
from netlang.runtime.profile import StepProfile

BUCKET_BYTES = 256 * 1024   # gradient bytes per bucket: a few buckets for netlang's CPU models


@dataclass(frozen=True)
class _Matrix:
    """One parameter's gradient as a CNTK matrix in the flat buffer."""

    offset: int
    rows: int
    cols: int

    @property
    def size(self) -> int:
        return self.rows * self.cols

    def columns(self, flat):
        return flat[self.offset:self.offset + self.size].reshape(self.cols, self.rows)


@dataclass(frozen=True)
class _Piece:
    """The columns [c0, c1) of a bucket's matrix m that lie in one stripe."""

    matrix: int
    c0: int
    c1: int


def stripe_starts(cols: int, size: int) -> tuple:
    """Boundaries of K = `size` stripes of `cols` items: floor(n/K) each, +1 for the first n mod K."""
    base, extra = divmod(cols, size)
    starts = [0]
    for r in range(size):
        starts.append(starts[-1] + base + (1 if r < extra else 0))
    return tuple(starts)


class _Bucket:
    """A contiguous range of segments, exchanged together; its stripes and byte layout."""

    def __init__(self, number: int, matrices: list[_Matrix], start: int, stop: int, workers: int):
        self.number = number                    # its place in the start order
        self.matrices = matrices
        self.start, self.stop = start, stop     # the slice of the flat buffer (full precision)
        self.first_column = np.cumsum([0] + [m.cols for m in matrices])
        self.cuts = self._column_cuts(workers)  # K + 1 bucket column indices
        self.pieces = [self._pieces(self.cuts[r], self.cuts[r + 1]) for r in range(workers)]
        self._layouts: dict[tuple, _Layout] = {}

    def _column_cuts(self, workers: int) -> list[int]:
        """Where stripe r begins: the first column starting at or after value r's share."""
        first_value = np.cumsum([0] + [m.size for m in self.matrices])
        cuts = []
        for target in stripe_starts(int(first_value[-1]), workers):
            index = int(np.searchsorted(first_value, target, side="right")) - 1
            if index >= len(self.matrices):
                cuts.append(int(self.first_column[-1]))
                continue
            rows = self.matrices[index].rows
            cuts.append(int(self.first_column[index]) + -(-(target - int(first_value[index])) // rows))
        return cuts

    def _pieces(self, lo: int, hi: int) -> list[_Piece]:
        pieces = []
        for index, m in enumerate(self.matrices):
            first = int(self.first_column[index])
            c0, c1 = max(lo - first, 0), min(hi - first, m.cols)
            if c0 < c1:
                pieces.append(_Piece(index, c0, c1))
        return pieces

    def values_in_stripe(self, rank: int) -> int:
        return sum(self.matrices[p.matrix].rows * (p.c1 - p.c0) for p in self.pieces[rank])

    def layout(self, bits: int, dtype, xp) -> _Layout:
        key = (bits, np.dtype(dtype).str)
        if key not in self._layouts:
            self._layouts[key] = _Layout(self, bits, dtype, xp)
        return self._layouts[key]


class _Layout:
    """Where each matrix's records and each stripe lie in a bucket's bytes, at `bits` bits."""

    def __init__(self, bucket: _Bucket, bits: int, dtype, xp):
        self.records = [record_size(m.rows, bits, dtype) for m in bucket.matrices]
        sizes = [m.cols * r for m, r in zip(bucket.matrices, self.records)]
        self.offsets = [int(o) for o in np.cumsum([0] + sizes[:-1])]
        self.total = int(sum(sizes))
        cuts = [self.byte_of(bucket, c) for c in bucket.cuts]
        self.stripe_bytes = [b - a for a, b in zip(cuts, cuts[1:])]
        self.send = xp.empty(self.total, dtype=np.uint8)    # this rank's records, bucket order
        self.reduced = None                                  # this rank's re-quantised stripe

    def byte_of(self, bucket: _Bucket, column: int) -> int:
        """The first byte of bucket column `column` (the bucket's length past its last one)."""
        index = int(np.searchsorted(bucket.first_column, column, side="right")) - 1
        if index >= len(bucket.matrices):
            return self.total
        return self.offsets[index] + (column - int(bucket.first_column[index])) * self.records[index]

    def region(self, buffer, bucket: _Bucket, index: int, c0: int = 0, c1: int | None = None):
        """The (columns, record) bytes of matrix `index`'s columns [c0, c1) in a bucket-order buffer."""
        c1 = bucket.matrices[index].cols if c1 is None else c1
        record = self.records[index]
        start = self.offsets[index] + c0 * record
        return buffer[start:start + (c1 - c0) * record].reshape(c1 - c0, record)


class GradientAggregator:
    """Sums the gradients of all ranks in place (see the module docstring)."""

    def __init__(self, comm: Communicator, segments: Sequence[tuple[int, tuple]], size: int,
                 dtype="float32", bits: int = 32, zero_threshold: bool = True,
                 bucket_bytes: int = BUCKET_BYTES, backend: Backend | None = None,
                 profile: StepProfile | None = None):
        self.comm = comm
        self.dtype = np.dtype(dtype)
        self.size = int(size)
        self.zero_threshold = zero_threshold
        self.backend = backend or NumpyBackend(self.dtype)
        self.xp = self.backend.xp
        self.profile = profile or StepProfile(enabled=False)
        matrices = [_Matrix(int(off), *column_dims(tuple(shape))) for off, shape in segments]
        end = 0
        for m in matrices:
            if m.offset < end or m.offset + m.size > self.size:
                raise ValueError(f"segment at {m.offset} with {m.size} elements overlaps the one before "
                                 f"or lies outside the gradient buffer of {self.size} (segments go in "
                                 f"buffer order)")
            end = m.offset + m.size
        self.buckets, self.bucket_of = _buckets(matrices, self.size, bucket_bytes // self.dtype.itemsize,
                                                comm.size)
        self.residual = self.xp.zeros(self.size, dtype=self.dtype)
        own = [b.values_in_stripe(comm.rank) for b in self.buckets]
        self._own_residual = [int(o) for o in np.cumsum([0] + own)]
        self.stripe_residual = self.xp.zeros(self._own_residual[-1], dtype=self.dtype)
        self.bits = bits
        self._grad = None

    # ---- gradientBits ------------------------------------------------------------------------

    @property
    def full_precision(self) -> bool:
        return self.bits not in SUPPORTED_BITS

    # ---- the step --------------------------------------------------------------------------------

    def aggregate(self, flat_grad, mb_samples: int) -> int:
        """Replace `flat_grad` by the sum over all ranks; return the global minibatch's samples."""
        self.begin(flat_grad)
        return self.finish(mb_samples)

    def begin(self, flat_grad) -> None:
        """Start a step on `flat_grad`; its segments are announced by `segment_ready`."""
        if flat_grad.dtype != self.dtype or flat_grad.shape != (self.size,):
            raise ValueError(f"expected a {self.dtype} gradient of {self.size} elements, got "
                             f"{flat_grad.dtype} {flat_grad.shape}")
        self._grad = flat_grad
        self._missing = [len(b.matrices) for b in self.buckets]   # segments not yet final
        self._next = 0               # the next bucket to start
        self._in_flight: list = []   # (bucket, phase, request, buffers), in start order

    @property
    def in_step(self) -> bool:
        return self._grad is not None

    def segment_ready(self, index: int) -> None:
        """Segment `index`'s gradient is final: start the buckets that are complete, in order."""
        self._missing[self.bucket_of[index]] -= 1
        while self._next < len(self.buckets) and self._missing[self._next] == 0:
            self._start(self.buckets[self._next])
            self._next += 1
        with self.profile.phase("communicate"):
            for entry in self._in_flight:       # let the exchanges in flight progress
                entry[2].test()

    def finish(self, mb_samples: int) -> int:
        """Start what is left, wait for everything, write the aggregate; the global sample count."""
        while self._next < len(self.buckets):
            self._start(self.buckets[self._next])
            self._next += 1
        with self.profile.phase("communicate"):
            samples = self.comm.iallreduce_sum(np.array([mb_samples], dtype=np.float64))
        if self._in_flight and self._in_flight[-1][1] == "scatter":
            self._in_flight[-1] = self._reduce_stripe(self._in_flight[-1])
        for entry in self._in_flight:
            self._complete(entry)
        self._in_flight, self._grad = [], None
        with self.profile.phase("wait"):
            return round(float(samples.wait()[0]))

    def _start(self, bucket: _Bucket) -> None:
        if self.full_precision:
            with self.profile.phase("communicate"):
                part = self._grad[bucket.start:bucket.stop]
                # NCCL reduces the gradient where it is; MPI takes a host copy (`part` itself on the CPU).
                host = part if self.comm.device_buffers else self.backend.to_host(part)
                self._in_flight.append((bucket, "sum", self.comm.iallreduce_sum(host), (part, host)))
            return
        previous_scatters = bool(self._in_flight) and self._in_flight[-1][1] == "scatter"
        self._in_flight.append(self._scatter(bucket))
        if previous_scatters:     # its all-to-all has had the time of this bucket's quantisation
            self._in_flight[-2] = self._reduce_stripe(self._in_flight[-2])

    def _complete(self, entry) -> None:
        bucket, phase, request, buffers = entry
        with self.profile.phase("wait"):
            result = request.wait()
        if phase == "gather":
            self._write_aggregate(bucket, result)
            return
        part, host = buffers
        if host is not part:     # a device buffer: the sum comes back from the host
            with self.profile.phase("communicate"):
                part[...] = self.backend.from_host(host)

    # ---- the k-bit exchange of one bucket ---------------------------------------------------------

    def _scatter(self, bucket: _Bucket):
        """1-2: quantise the bucket into records, send stripe r to rank r."""
        layout = bucket.layout(self.bits, self.dtype, self.xp)
        with self.profile.phase("quantize"):
            for index, m in enumerate(bucket.matrices):
                q = quantize(m.columns(self._grad), m.columns(self.residual), self.bits, self.zero_threshold)
                q.write_records(layout.region(layout.send, bucket, index))
        with self.profile.phase("communicate"):
            host = self.backend.to_host(layout.send)
            me = self.comm.rank
            request = self.comm.ialltoallv(host, layout.stripe_bytes, [layout.stripe_bytes[me]] * self.comm.size)
        return bucket, "scatter", request, None

    def _reduce_stripe(self, entry):
        """3: sum this rank's stripe over the K ranks, re-quantise it, all-gather the stripes."""
        bucket, _, request, _ = entry
        layout = bucket.layout(self.bits, self.dtype, self.xp)
        me, workers = self.comm.rank, self.comm.size
        with self.profile.phase("wait"):
            received = request.wait()
        with self.profile.phase("communicate"):
            received = self.backend.from_host(received).reshape(workers, layout.stripe_bytes[me])
        if layout.reduced is None:
            layout.reduced = self.xp.empty(layout.stripe_bytes[me], dtype=np.uint8)
        residual = self.stripe_residual[self._own_residual[bucket.number]:]
        with self.profile.phase("quantize"):
            position = stripe_start = layout.byte_of(bucket, bucket.cuts[me])
            for piece in bucket.pieces[me]:
                m = bucket.matrices[piece.matrix]
                n, record = piece.c1 - piece.c0, layout.records[piece.matrix]
                start = position - stripe_start
                records = received[:, start:start + n * record].reshape(workers * n, record)
                values = dequantize(QuantizedColumns.from_records(records, m.rows, self.bits, self.dtype))
                total = values.reshape(workers, n, m.rows).sum(axis=0)     # rank order
                q = quantize(total, residual[:n * m.rows].reshape(n, m.rows), self.bits, self.zero_threshold)
                q.write_records(layout.reduced[start:start + n * record].reshape(n, record))
                residual = residual[n * m.rows:]
                position += n * record
        with self.profile.phase("communicate"):
            host = self.backend.to_host(layout.reduced)
            return bucket, "gather", self.comm.iallgatherv(host, layout.stripe_bytes), None

    def _write_aggregate(self, bucket: _Bucket, gathered) -> None:
        """4: every rank's re-quantised stripe, dequantised into the gradient."""
        layout = bucket.layout(self.bits, self.dtype, self.xp)
        with self.profile.phase("communicate"):
            gathered = self.backend.from_host(gathered)
        with self.profile.phase("quantize"):
            for index, m in enumerate(bucket.matrices):
                q = QuantizedColumns.from_records(layout.region(gathered, bucket, index), m.rows, self.bits,
                                                  self.dtype)
                m.columns(self._grad)[...] = dequantize(q)

    # ---- checkpoints --------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """This rank's error-feedback state (it differs between ranks)."""
        return {"residual": self.backend.to_host(self.residual).copy(),
                "stripe_residual": self.backend.to_host(self.stripe_residual).copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for name in ("residual", "stripe_residual"):
            target = getattr(self, name)
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(f"{name} in the checkpoint has shape {value.shape}, this job "
                                 f"needs {target.shape} (was the number of workers changed?)")
            target[...] = self.backend.from_host(value)


def _buckets(matrices: list[_Matrix], size: int, bucket_values: int, workers: int):
    """Buckets of consecutive matrices, grouped from the last one back; (buckets in start order,
    bucket index of every matrix). The buckets' slices of the flat buffer cover all of it."""
    groups: list[list[int]] = []
    values = 0
    for index in reversed(range(len(matrices))):
        if groups and values + matrices[index].size <= bucket_values:
            groups[-1].insert(0, index)
            values += matrices[index].size
        else:
            groups.append([index])
            values = matrices[index].size
    buckets, bucket_of = [], [0] * len(matrices)
    for number, group in enumerate(groups):
        start = 0 if number == len(groups) - 1 else matrices[group[0]].offset
        stop = size if number == 0 else matrices[groups[number - 1][0]].offset
        buckets.append(_Bucket(number, [matrices[i] for i in group], start, stop, workers))
        for i in group:
            bucket_of[i] = number
    return buckets, bucket_of
