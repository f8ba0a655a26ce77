"""The data structures that flow out of the readers.

A deserializer describes its streams with `StreamInfo` and hands over its data one chunk at a time as
a `ChunkData`: per stream, all rows of the chunk in one array plus the offsets where each sequence
starts (`DenseChunk`, `SparseChunk`). The minibatch source picks sequences out of chunks and packs
them, per stream, into a `StreamBatch`; the streams together form a `Minibatch`.

A stream batch has the same packed form as a chunk (rows plus sequence offsets); the runtime asks it
for the layout it needs: `(N, dim)` for non-sequence inputs, `(T, N, dim)` plus a mask for sequences,
or CSR arrays to keep sparse data sparse (an embedding is a gather by index, not a product with a
one-hot matrix). Picking sequences out of chunks (`take`) and joining them (`concat`) are array
operations, not loops over sequences.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netlang.errors import DataError


@dataclass(frozen=True)
class StreamInfo:
    """One input stream: its name, the row-major shape of one sample, sparse or dense.

    `defines_mb_size` marks the stream whose sample count is the minibatch size (CNTK's
    `definesMBSize`); when no stream has it, the longest stream of each sequence counts.
    """

    name: str
    shape: tuple
    is_sparse: bool = False
    defines_mb_size: bool = False

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class SparseSequence:
    """One sequence of a sparse stream in CSR form: row `t` holds `indices[offsets[t]:offsets[t+1]]`."""

    indices: np.ndarray   # int32 column indices, 0-based
    values: np.ndarray
    offsets: np.ndarray   # int64, length = number of samples + 1, starting at 0

    def __len__(self) -> int:
        return len(self.offsets) - 1


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """`[0, l0, l0+l1, …]`: where each of a run of blocks with these lengths starts (plus the end)."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def select_blocks(offsets: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The element indices of blocks `blocks` (block `b` is `offsets[b]:offsets[b+1]`), in that order,
    and the blocks' lengths. Used for sequences → rows and for rows → non-zeros alike."""
    starts = offsets[blocks]
    lengths = offsets[blocks + 1] - starts
    shift = starts - (np.cumsum(lengths) - lengths)
    return np.repeat(shift, lengths) + np.arange(int(lengths.sum()), dtype=np.int64), lengths


@dataclass
class DenseChunk:
    """Rows of one dense stream, grouped into sequences: sequence `i` is `values[seq_offsets[i]:seq_offsets[i+1]]`."""

    values: np.ndarray        # (rows, *sample_shape)
    seq_offsets: np.ndarray   # int64, number of sequences + 1

    def sequence(self, i: int) -> np.ndarray:
        return self.values[self.seq_offsets[i]:self.seq_offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.seq_offsets)

    def take(self, seqs: np.ndarray) -> "DenseChunk":
        """Sequences `seqs`, in that order, packed anew."""
        rows, lengths = select_blocks(self.seq_offsets, np.asarray(seqs, dtype=np.int64))
        return DenseChunk(self.values[rows], offsets_of(lengths))

    @staticmethod
    def concat(parts: list["DenseChunk"]) -> "DenseChunk":
        return DenseChunk(np.concatenate([p.values for p in parts]),
                          offsets_of(np.concatenate([p.lengths() for p in parts])))


@dataclass
class SparseChunk:
    """Rows of one sparse stream in CSR form, grouped into sequences by `seq_offsets` (row offsets)."""

    indices: np.ndarray       # int32, one per non-zero
    values: np.ndarray        # one per non-zero
    row_offsets: np.ndarray   # int64, rows + 1
    seq_offsets: np.ndarray   # int64 row offsets of the sequences, number of sequences + 1

    def sequence(self, i: int) -> SparseSequence:
        r0, r1 = self.seq_offsets[i], self.seq_offsets[i + 1]
        offsets = self.row_offsets[r0:r1 + 1]
        lo, hi = offsets[0], offsets[-1]
        return SparseSequence(self.indices[lo:hi], self.values[lo:hi], offsets - lo)

    def lengths(self) -> np.ndarray:
        return np.diff(self.seq_offsets)

    def take(self, seqs: np.ndarray) -> "SparseChunk":
        """Sequences `seqs`, in that order, packed anew."""
        rows, lengths = select_blocks(self.seq_offsets, np.asarray(seqs, dtype=np.int64))
        nonzeros, nnz = select_blocks(self.row_offsets, rows)
        return SparseChunk(self.indices[nonzeros], self.values[nonzeros], offsets_of(nnz), offsets_of(lengths))

    @staticmethod
    def concat(parts: list["SparseChunk"]) -> "SparseChunk":
        return SparseChunk(np.concatenate([p.indices for p in parts]),
                           np.concatenate([p.values for p in parts]),
                           offsets_of(np.concatenate([np.diff(p.row_offsets) for p in parts])),
                           offsets_of(np.concatenate([p.lengths() for p in parts])))


StreamChunk = DenseChunk | SparseChunk


@dataclass
class ChunkData:
    """What a deserializer returns for one chunk: every stream, plus which sequences are usable.

    `valid[i]` is False for a sequence the deserializer had to drop (its lines were invalid and
    skipped under `maxErrors`); the minibatch source leaves such sequences out.
    """

    streams: dict[str, StreamChunk]
    valid: np.ndarray


def _time_and_sequence(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each packed row: its time step and its sequence."""
    seq = np.repeat(np.arange(len(lengths)), lengths)
    step = np.arange(len(seq)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return step, seq


@dataclass
class StreamBatch:
    """The sequences of one stream in a minibatch, packed: all rows in one array plus sequence offsets.

    `sequences` gives them one by one (dense `(len_i, *shape)` arrays or `SparseSequence`s); the
    `to_…` methods give the layouts the runtime computes on.
    """

    info: StreamInfo
    data: StreamChunk

    @classmethod
    def from_sequences(cls, info: StreamInfo, sequences: list) -> "StreamBatch":
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        if info.is_sparse:
            indices = np.concatenate([s.indices for s in sequences]) if sequences else np.zeros(0, np.int32)
            values = np.concatenate([s.values for s in sequences]) if sequences else np.zeros(0, np.float32)
            nnz = np.concatenate([np.diff(s.offsets) for s in sequences]) if sequences else np.zeros(0, np.int64)
            return cls(info, SparseChunk(indices, values, offsets_of(nnz), offsets_of(lengths)))
        rows = np.concatenate(sequences) if sequences else np.zeros((0,) + tuple(info.shape), np.float32)
        return cls(info, DenseChunk(rows, offsets_of(lengths)))

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def is_sparse(self) -> bool:
        return self.info.is_sparse

    @property
    def num_sequences(self) -> int:
        return len(self.data.seq_offsets) - 1

    @property
    def sequences(self) -> list:
        return [self.data.sequence(i) for i in range(self.num_sequences)]

    def lengths(self) -> np.ndarray:
        return self.data.lengths()

    @property
    def num_samples(self) -> int:
        return int(self.data.seq_offsets[-1])

    @property
    def max_length(self) -> int:
        return int(self.lengths().max()) if self.num_sequences else 0

    # -- dense layouts ---------------------------------------------------------------------------

    def to_dense_batch(self, dtype=np.float32) -> np.ndarray:
        """`(N, *shape)`: one sample per sequence, for inputs without a sequence axis."""
        if self.max_length > 1:
            raise DataError(
                f"stream '{self.name}' has sequences of up to {self.max_length} samples, "
                "but it feeds an input that takes one sample per sequence",
                hint="declare the input as a sequence, or write one sample per sequence in the data")
        if self.is_sparse:
            return self._scatter(self.num_sequences, np.arange(self.num_sequences), dtype)
        return self.data.values.astype(dtype, copy=False)

    def to_padded(self, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """`(T, N, *shape)` with zeros past each sequence's end, and a boolean mask `(T, N)`."""
        lengths = self.lengths()
        n, t_max = self.num_sequences, self.max_length
        mask = np.arange(t_max)[:, None] < lengths[None, :]
        step, seq = _time_and_sequence(lengths)
        if self.is_sparse:
            flat = self._scatter(t_max * n, step * n + seq, dtype)
            return flat.reshape((t_max, n) + tuple(self.info.shape)), mask
        out = np.zeros((t_max, n) + tuple(self.info.shape), dtype=dtype)
        out[step, seq] = self.data.values
        return out, mask

    # -- sparse layouts --------------------------------------------------------------------------

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(indices, values, row_offsets)` over the rows of all sequences, sequence after sequence."""
        self._require_sparse()
        return self.data.indices, self.data.values, self.data.row_offsets

    def padded_csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR over the `T*N` rows of the padded layout (row `t*N + n`); padding rows are empty."""
        self._require_sparse()
        indices, values, row_offsets = self.csr()
        lengths = self.lengths()
        n, t_max = self.num_sequences, self.max_length
        step, seq = _time_and_sequence(lengths)
        # Padded row r holds packed row source[r], or nothing (-1).
        source = np.full(t_max * n, -1, dtype=np.int64)
        source[step * n + seq] = np.arange(len(seq))
        present = np.flatnonzero(source >= 0)
        nnz = np.zeros(t_max * n, dtype=np.int64)
        nnz[present] = np.diff(row_offsets)[source[present]]
        nonzeros, _ = select_blocks(row_offsets, source[present])
        return indices[nonzeros], values[nonzeros], offsets_of(nnz)

    def _require_sparse(self) -> None:
        if not self.is_sparse:
            raise TypeError(f"stream '{self.name}' is dense; csr() is for sparse streams")

    def _scatter(self, rows: int, target_rows: np.ndarray, dtype) -> np.ndarray:
        indices, values, row_offsets = self.csr()
        out = np.zeros((rows, self.info.dim), dtype=dtype)
        row_of_nz = np.repeat(target_rows, np.diff(row_offsets))
        # Repeated indices within a row add up, as a sparse matrix product would.
        np.add.at(out, (row_of_nz, indices), values.astype(dtype, copy=False))
        return out.reshape((rows,) + tuple(self.info.shape))


@dataclass
class Minibatch:
    """One minibatch: the local share of every stream plus CNTK's bookkeeping.

    `num_samples` counts samples in the stream that defines the minibatch size (else the longest
    stream of each sequence); the `global_` counts are over the whole minibatch of all ranks.
    `end_of_epoch` marks the last minibatch of an epoch; `sweep_end` is set when a pass over the
    data ended inside this minibatch. In truncated BPTT (readers/truncation.py) sequence `i` is a
    window of the sequence in parallel slot `slots[i]` that starts at its step `steps_before[i]`
    (> 0: it goes on from that slot's window in the previous minibatch); both are None for whole
    sequences.
    """

    streams: dict[str, StreamBatch]
    num_samples: int
    num_sequences: int
    global_num_samples: int
    global_num_sequences: int
    epoch: int
    end_of_epoch: bool
    sweep_end: bool
    keys: list = field(default_factory=list)
    slots: np.ndarray | None = None
    steps_before: np.ndarray | None = None

    def __getitem__(self, name: str) -> StreamBatch:
        return self.streams[name]

    @property
    def is_empty(self) -> bool:
        return self.num_sequences == 0
