"""The minibatch source: deserializers joined by sequence key, randomized by chunks, packed into minibatches.

Three things happen here, in this order:

* **Composition.** Several deserializers (features from one file, labels from another) are joined by
  sequence key. The first one is primary: its chunks are the units of randomization and reading; a
  sequence the others lack is left out (with a warning).
* **Randomization (per sweep).** A sweep is one pass over the data. Sweep `s` permutes the chunks
  with a generator seeded by `(randomizationSeed, s)`, groups the permuted chunks into windows
  (`randomizationWindow` chunks, or about that many samples with `sampleBasedRandomizationWindow`),
  and shuffles the sequences within each window. With `randomize = false` the order is the file order.
* **Reading.** A deserializer that can read single sequences (`read_sequences`, the image
  deserializer) is asked once per minibatch for just the minibatch's sequences, and nothing of it is
  kept: a window of decoded images does not fit in memory (the default window is the whole data set;
  ImageNet decoded is ~770 GB), and reading whole chunks for a minibatch of shuffled images would
  decode a chunk per image. So what such a deserializer holds is the minibatch being read (times the
  read-ahead depth), whatever the data-set size and window. Other deserializers are read by whole
  chunks, kept in an LRU cache with room for two windows (the one being read and the next one);
  their decoded form is about the size of the file.
* **Epochs and minibatches.** The sweeps are concatenated into one endless stream of sequences.
  `epochSize` samples make an epoch (0: one sweep): epoch `e` starts at the first sequence that
  begins at or after sample `e * epochSize`, so an epoch may cross a sweep boundary and the next
  epoch continues exactly where it ended, as in CNTK. `next_minibatch(n)` takes whole sequences, up
  to `n` samples and at least one sequence, never past the end of the epoch. With `num_ranks > 1`
  every rank computes the same global minibatch and keeps the sequences `i % num_ranks == rank`.

Everything that decides the next minibatch is (epoch, sweep, position in the sweep) plus the
configuration, so `state()`/`restore()` resume a run exactly.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import NamedTuple, Protocol, Sequence

import numpy as np

from netlang.errors import ConfigError, DataError, DataPosition, suggest
from netlang.readers.batch import ChunkData, Minibatch, StreamBatch, StreamInfo

log = logging.getLogger("netlang.readers")

STATE_VERSION = 1


class Deserializer(Protocol):
    """What a data format must provide to plug into the minibatch source.

    Sequences are grouped in chunks (the unit of reading and of randomization). For each chunk the
    deserializer knows, without reading it, the sequence keys (to join deserializers) and sizes (in
    samples of the stream that defines the minibatch size, else of the longest stream);
    `read_chunk` returns the data of all its streams.

    Optional: `read_sequences(chunks, positions, sweep)` returns a `ChunkData` of just the sequences
    at `positions[i]` of chunk `chunks[i]`, in that order; the source then reads only what each
    minibatch needs (see the module docstring). `sweep_dependent` (default False) says the data
    depend on the sweep; `read_chunk(chunk, sweep)` then takes the sweep too.
    """

    description: str

    def stream_infos(self) -> list[StreamInfo]: ...

    def num_chunks(self) -> int: ...

    def chunk_keys(self, chunk: int) -> np.ndarray: ...

    def chunk_sizes(self, chunk: int) -> np.ndarray: ...

    def read_chunk(self, chunk: int) -> ChunkData: ...


class ReadPart(NamedTuple):
    """Some of a minibatch's sequences as read from one deserializer: the data they are in (a whole
    chunk, or a `read_sequences` answer), which of the minibatch's sequences they are, and their
    positions in `data`."""

    data: ChunkData
    which: np.ndarray
    positions: np.ndarray


# ---- composition -------------------------------------------------------------------------------

class SequenceTable:
    """Every usable sequence, in primary order: where to find it in each deserializer, and its size.

    `chunk[d][g]`, `pos[d][g]`: chunk and position within the chunk of sequence `g` in deserializer
    `d`. The sequences of primary chunk `c` are `chunk_starts[c]:chunk_starts[c+1]`.
    """

    def __init__(self, deserializers: Sequence[Deserializer], size_from: int | None):
        primary = deserializers[0]
        per_chunk_keys = [np.asarray(primary.chunk_keys(c)) for c in range(primary.num_chunks())]
        keys = np.concatenate(per_chunk_keys)
        chunk = np.repeat(np.arange(len(per_chunk_keys)), [len(k) for k in per_chunk_keys])
        pos = np.concatenate([np.arange(len(k)) for k in per_chunk_keys])
        sizes = [np.concatenate([primary.chunk_sizes(c) for c in range(primary.num_chunks())])]
        self.chunk, self.pos = [chunk], [pos]
        usable = np.ones(len(keys), dtype=bool)
        for d in deserializers[1:]:
            d_chunk, d_pos, d_sizes, found = _join(keys, d)
            missing = int((~found).sum())
            if missing == len(keys):
                raise DataError(f"no sequence key of {primary.description} appears in {d.description}",
                                DataPosition(d.description),
                                hint="deserializers are joined by sequence id; give both files the same ids")
            if missing:
                log.warning("%d sequences of %s are missing in %s and are left out",
                            missing, primary.description, d.description)
            usable &= found
            self.chunk.append(d_chunk)
            self.pos.append(d_pos)
            sizes.append(d_sizes)
        if size_from is not None:
            size = sizes[size_from]
        else:
            size = np.max(np.stack(sizes), axis=0)
        keep = np.flatnonzero(usable)
        self.keys = keys[keep]
        self.size = size[keep].astype(np.int64)
        self.chunk = [c[keep] for c in self.chunk]
        self.pos = [p[keep] for p in self.pos]
        per_chunk = np.bincount(self.chunk[0], minlength=primary.num_chunks())
        self.chunk_starts = np.concatenate([[0], np.cumsum(per_chunk)]).astype(np.int64)
        self.chunk_samples = np.bincount(self.chunk[0], weights=self.size,
                                         minlength=primary.num_chunks()).astype(np.int64)

    def __len__(self) -> int:
        return len(self.keys)


def _join(keys: np.ndarray, d: Deserializer):
    """For each primary key, its chunk, position and size in deserializer `d`, and whether it exists."""
    per_chunk = [np.asarray(d.chunk_keys(c)) for c in range(d.num_chunks())]
    d_keys = np.concatenate(per_chunk)
    d_chunk = np.repeat(np.arange(len(per_chunk)), [len(k) for k in per_chunk])
    d_pos = np.concatenate([np.arange(len(k)) for k in per_chunk])
    d_sizes = np.concatenate([d.chunk_sizes(c) for c in range(d.num_chunks())])
    if d_keys.dtype.kind != keys.dtype.kind:
        keys, d_keys = keys.astype(str), d_keys.astype(str)    # numeric ids against text keys
    order = np.argsort(d_keys, kind="stable")
    where = np.searchsorted(d_keys[order], keys)
    where = np.minimum(where, len(order) - 1)
    found = d_keys[order][where] == keys
    hit = order[where]
    return d_chunk[hit], d_pos[hit], np.where(found, d_sizes[hit], 0), found


# ---- randomization -----------------------------------------------------------------------------

def sweep_order(table: SequenceTable, sweep: int, *, randomize: bool, seed: int,
                window_chunks: int | None, window_samples: int | None) -> np.ndarray:
    """The order in which sweep `sweep` visits the sequences (indices into the table)."""
    if not randomize:
        return np.arange(len(table))
    rng = np.random.default_rng([seed, sweep])
    chunks = rng.permutation(len(table.chunk_starts) - 1)
    parts = []
    for window in _windows(chunks, table.chunk_samples, window_chunks, window_samples):
        members = np.concatenate([np.arange(table.chunk_starts[c], table.chunk_starts[c + 1]) for c in window])
        parts.append(rng.permutation(members))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _windows(chunks: np.ndarray, chunk_samples: np.ndarray, window_chunks: int | None,
             window_samples: int | None) -> list[list[int]]:
    """Consecutive groups of the permuted chunks, each one randomization window."""
    if window_samples is None and (window_chunks is None or window_chunks >= len(chunks)):
        return [list(chunks)]
    windows, current, samples = [], [], 0
    for c in chunks:
        current.append(int(c))
        samples += int(chunk_samples[c])
        full = samples >= window_samples if window_samples is not None else len(current) >= window_chunks
        if full:
            windows.append(current)
            current, samples = [], 0
    if current:
        windows.append(current)
    return windows


# ---- the source --------------------------------------------------------------------------------

class MinibatchSource:
    """Minibatches of whole sequences from one or more deserializers (see the module docstring)."""

    def __init__(self, deserializers: Sequence[Deserializer], *, randomize: bool = True,
                 randomization_window: int | None = None, sample_based_window: bool = False,
                 seed: int = 0, epoch_size: int = 0, streams: Sequence[str] | None = None,
                 chunk_cache: int | None = None):
        if not deserializers:
            raise ValueError("a minibatch source needs at least one deserializer")
        self._deserializers = list(deserializers)
        self._all_infos = self._collect_streams()
        self._infos = self._select_streams(streams)
        self._defining_stream = next((n for n, i in self._all_infos.items() if i.defines_mb_size), None)
        self._owner = {info.name: d for d, des in enumerate(self._deserializers) for info in des.stream_infos()}
        size_from = self._size_defining_deserializer()
        self._table = SequenceTable(self._deserializers, size_from)
        self._samples_per_sweep = int(self._table.size.sum())
        if len(self._table) == 0 or self._samples_per_sweep == 0:
            raise DataError("the reader has no data", DataPosition(self._deserializers[0].description))
        self._randomize = randomize
        self._seed = seed
        self._window_chunks = None if sample_based_window else randomization_window
        self._window_samples = randomization_window if sample_based_window else None
        self._epoch_size = epoch_size
        self._sweeps: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._caches = [OrderedDict() for _ in self._deserializers]
        self._reads_sequences = [callable(getattr(d, "read_sequences", None)) for d in self._deserializers]
        self._read_sweep = 0
        self._cache_capacity = chunk_cache or self._default_cache_capacity()
        self.start_epoch(0)

    # -- description ----------------------------------------------------------------------------

    def streams(self) -> list[StreamInfo]:
        return list(self._infos.values())

    def stream_infos(self) -> dict[str, tuple[int, bool]]:
        """`{name: (dim, is_sparse)}` for every stream the minibatches carry."""
        return {name: (info.dim, info.is_sparse) for name, info in self._infos.items()}

    @property
    def samples_per_sweep(self) -> int:
        return self._samples_per_sweep

    @property
    def num_sequences(self) -> int:
        return len(self._table)

    @property
    def epoch(self) -> int:
        return self._epoch

    # -- epochs ---------------------------------------------------------------------------------

    def start_epoch(self, epoch: int) -> None:
        """Move to the first minibatch of `epoch` (0-based)."""
        self._epoch = epoch
        self._cursor = self._epoch_start(epoch)
        self._epoch_end = self._epoch_start(epoch + 1)

    def _epoch_start(self, epoch: int) -> tuple[int, int]:
        if self._epoch_size == 0:
            return (epoch, 0)
        return self._position(epoch * self._epoch_size)

    def _position(self, sample: int) -> tuple[int, int]:
        """(sweep, index) of the first sequence that starts at or after global sample position `sample`."""
        sweep, offset = divmod(sample, self._samples_per_sweep)
        _, starts = self._sweep(sweep)
        index = int(np.searchsorted(starts, offset, side="left"))
        if index >= len(self._table):
            return (sweep + 1, 0)
        return (sweep, index)

    def _sweep(self, sweep: int) -> tuple[np.ndarray, np.ndarray]:
        """The order of sweep `sweep` and the start sample of each of its sequences (plus the total)."""
        if sweep in self._sweeps:
            self._sweeps.move_to_end(sweep)
            return self._sweeps[sweep]
        order = sweep_order(self._table, sweep, randomize=self._randomize, seed=self._seed,
                            window_chunks=self._window_chunks, window_samples=self._window_samples)
        starts = np.concatenate([[0], np.cumsum(self._table.size[order])]).astype(np.int64)
        self._sweeps[sweep] = (order, starts)
        while len(self._sweeps) > 2:
            self._sweeps.popitem(last=False)
        return order, starts

    # -- minibatches ----------------------------------------------------------------------------

    def next_minibatch(self, num_samples: int, rank: int = 0, num_ranks: int = 1) -> Minibatch:
        """The next minibatch of up to `num_samples` samples (whole sequences, at least one).

        After the last minibatch of an epoch (`end_of_epoch`), the next call continues with the next
        epoch. With `num_ranks > 1` this returns rank `rank`'s share of the global minibatch.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be ≥ 1, not {num_samples}")
        if not 0 <= rank < num_ranks:
            raise ValueError(f"rank {rank} is not in 0..{num_ranks - 1}")
        before = (self._epoch, self._cursor, self._epoch_end)
        try:
            if self._cursor >= self._epoch_end:
                self._epoch += 1
                self._epoch_end = self._epoch_start(self._epoch + 1)
            # Deserializers whose samples change per sweep (random image augmentation) read the
            # sweep the minibatch starts in.
            self._read_sweep = self._cursor[0]
            picked, sweep_end = self._take(num_samples)
            parts = self._read(picked)
            while not self._usable(len(picked), parts).any() and self._cursor < self._epoch_end:
                # Every sequence taken was dropped by its deserializer: take more, never hand out nothing.
                more, more_sweep_end = self._take(num_samples)
                parts = [mine + [ReadPart(p.data, p.which + len(picked), p.positions) for p in extra]
                         for mine, extra in zip(parts, self._read(more))]
                picked, sweep_end = np.concatenate([picked, more]), sweep_end or more_sweep_end
            return self._assemble(picked, parts, rank, num_ranks, sweep_end)
        except BaseException:
            # A failed read leaves the position unchanged, so a retry reads the same minibatch.
            self._epoch, self._cursor, self._epoch_end = before
            raise

    def _take(self, num_samples: int) -> tuple[np.ndarray, bool]:
        """Advance the cursor over whole sequences worth at most `num_samples` samples (at least one)."""
        parts, left, sweep_end = [], num_samples, False
        n = len(self._table)
        while not parts or (self._cursor < self._epoch_end and left > 0):
            sweep, index = self._cursor
            order, starts = self._sweep(sweep)
            limit = self._epoch_end[1] if self._epoch_end[0] == sweep else n
            stop = min(int(np.searchsorted(starts, starts[index] + left, side="right")) - 1, limit)
            if stop <= index:
                if parts:
                    break
                stop = index + 1          # one sequence, even if it is longer than asked for
            parts.append(order[index:stop])
            left -= int(starts[stop] - starts[index])
            if stop == n:
                self._cursor = (sweep + 1, 0)
                sweep_end = True
                continue
            self._cursor = (sweep, stop)
            if stop < limit:
                break                     # the next sequence does not fit
        return np.concatenate(parts), sweep_end

    def _assemble(self, picked: np.ndarray, parts: list[list[ReadPart]], rank: int, num_ranks: int,
                  sweep_end: bool) -> Minibatch:
        # Position i of the global minibatch goes to rank i % num_ranks; dropped sequences go nowhere.
        # Every rank reads the whole global minibatch, so a bad image stops all ranks at the same step.
        usable = np.flatnonzero(self._usable(len(picked), parts))
        local = usable[usable % num_ranks == rank]
        sizes = self._sizes(len(picked), parts)
        streams = {name: StreamBatch(info, self._gather(name, parts[self._owner[name]], local))
                   for name, info in self._infos.items()}
        self._evict()
        return Minibatch(
            streams=streams,
            num_samples=int(sizes[local].sum()),
            num_sequences=len(local),
            global_num_samples=int(sizes[usable].sum()),
            global_num_sequences=len(usable),
            epoch=self._epoch,
            end_of_epoch=self._cursor >= self._epoch_end,
            sweep_end=sweep_end,
            keys=self._table.keys[picked[local]].tolist(),
        )

    def _read(self, seqs: np.ndarray) -> list[list[ReadPart]]:
        """The data of table sequences `seqs`, per deserializer: one part per chunk touched, or one
        `read_sequences` answer for all of them (see the module docstring)."""
        parts = []
        for d, deserializer in enumerate(self._deserializers):
            chunks, positions = self._table.chunk[d][seqs], self._table.pos[d][seqs]
            if self._reads_sequences[d]:
                every = np.arange(len(seqs))
                data = deserializer.read_sequences(chunks, positions, self._sweep_of(d))
                parts.append([ReadPart(data, every, every)])
                continue
            by_chunk = []
            for chunk in np.unique(chunks).tolist():
                which = np.flatnonzero(chunks == chunk)
                by_chunk.append(ReadPart(self._chunk(d, chunk), which, positions[which]))
            parts.append(by_chunk)
        return parts

    def _sweep_of(self, d: int) -> int:
        """The sweep deserializer `d` reads for: the minibatch's if its data depend on it, else 0."""
        return self._read_sweep if getattr(self._deserializers[d], "sweep_dependent", False) else 0

    @staticmethod
    def _usable(count: int, parts: list[list[ReadPart]]) -> np.ndarray:
        """Which of the `count` sequences read every deserializer delivered (none dropped them as invalid)."""
        usable = np.ones(count, dtype=bool)
        for part in (p for d_parts in parts for p in d_parts):
            usable[part.which] &= part.data.valid[part.positions]
        return usable

    def _sizes(self, count: int, parts: list[list[ReadPart]]) -> np.ndarray:
        """Samples of each of the `count` sequences read: in the stream that defines the minibatch
        size, else the longest."""
        sizes = np.zeros(count, dtype=np.int64)
        for part in (p for d_parts in parts for p in d_parts):
            for name, stream in part.data.streams.items():
                if self._defining_stream in (None, name):
                    sizes[part.which] = np.maximum(sizes[part.which], stream.lengths()[part.positions])
        return sizes

    def _gather(self, name: str, parts: list[ReadPart], local: np.ndarray):
        """Stream `name` of the sequences read whose indices are `local` (ascending), packed in that order."""
        taken, order = [], []
        for part in parts:
            mine = np.isin(part.which, local)
            if mine.any():
                taken.append(part.data.streams[name].take(part.positions[mine]))
                order.append(part.which[mine])
        if not taken:
            return StreamBatch.from_sequences(self._infos[name], []).data
        if len(taken) == 1:
            return taken[0]          # one part: its `which` ascends, so the order is right already
        merged = type(taken[0]).concat(taken)
        return merged.take(np.argsort(np.concatenate(order)))

    # -- chunk cache ----------------------------------------------------------------------------

    def _chunk(self, d: int, chunk: int) -> ChunkData:
        cache = self._caches[d]
        deserializer = self._deserializers[d]
        per_sweep = getattr(deserializer, "sweep_dependent", False)
        key = (chunk, self._read_sweep) if per_sweep else chunk
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        data = deserializer.read_chunk(chunk, key[1]) if per_sweep else deserializer.read_chunk(chunk)
        cache[key] = data
        return data

    def _evict(self) -> None:
        for cache in self._caches:
            while len(cache) > self._cache_capacity:
                cache.popitem(last=False)

    def _default_cache_capacity(self) -> int:
        """Room for two randomization windows: the one being read and the next one (for the
        deserializers read by whole chunks)."""
        num_chunks = self._deserializers[0].num_chunks()
        if not self._randomize:
            return 2
        if self._window_samples is not None:
            filled = self._table.chunk_samples[self._table.chunk_samples > 0]
            window = -(-self._window_samples // int(filled.min())) + 1
        else:
            window = self._window_chunks or num_chunks
        return max(2, min(2 * window, num_chunks) + 1)

    # -- checkpoints ----------------------------------------------------------------------------

    def state(self) -> dict:
        """Where the next minibatch comes from, as JSON-able data (for checkpoints)."""
        return {
            "version": STATE_VERSION,
            "epoch": self._epoch,
            "sweep": self._cursor[0],
            "index": self._cursor[1],
            "seed": self._seed,
            "randomize": self._randomize,
            "epoch_size": self._epoch_size,
            "samples_per_sweep": self._samples_per_sweep,
            "num_sequences": len(self._table),
        }

    def restore(self, state: dict) -> None:
        """Continue exactly where `state()` was taken (the same data and seed are required)."""
        try:
            version, epoch = int(state["version"]), int(state["epoch"])
            cursor = (int(state["sweep"]), int(state["index"]))
            same_data = (int(state["samples_per_sweep"]) == self._samples_per_sweep
                         and int(state["num_sequences"]) == len(self._table))
            same_order = int(state["seed"]) == self._seed and bool(state["randomize"]) == self._randomize
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"the saved reader state is damaged ({err})",
                            hint="delete the checkpoint to start the run afresh") from None
        if version != STATE_VERSION:
            raise DataError(f"the saved reader state has version {version}; this netlang reads {STATE_VERSION}")
        if not same_data:
            raise DataError("the data changed since the checkpoint was written "
                            f"({state['samples_per_sweep']} samples then, {self._samples_per_sweep} now)",
                            hint="resume with the same data, or start the run afresh")
        if not same_order:
            raise DataError("the reader's randomization settings changed since the checkpoint was written",
                            hint="resume with the same randomize and randomizationSeed")
        self._epoch = epoch
        self._cursor = cursor
        self._epoch_end = self._epoch_start(epoch + 1)

    def close(self) -> None:
        for cache in self._caches:
            cache.clear()

    # -- construction helpers -------------------------------------------------------------------

    def _collect_streams(self) -> dict[str, StreamInfo]:
        infos: dict[str, StreamInfo] = {}
        for d in self._deserializers:
            for info in d.stream_infos():
                if info.name in infos:
                    raise ConfigError(f"stream '{info.name}' is defined by two deserializers",
                                      hint="give each stream a unique name")
                infos[info.name] = info
        if sum(info.defines_mb_size for info in infos.values()) > 1:
            raise ConfigError("more than one stream sets definesMBSize",
                              hint="only one stream may define the minibatch size")
        return infos

    def _select_streams(self, wanted: Sequence[str] | None) -> dict[str, StreamInfo]:
        if wanted is None:
            return dict(self._all_infos)
        for name in wanted:
            if name not in self._all_infos:
                raise ConfigError(f"the reader has no stream '{name}'",
                                  hint=suggest(name, self._all_infos) or
                                  "its streams are " + ", ".join(f"'{n}'" for n in self._all_infos))
        return {name: self._all_infos[name] for name in wanted}

    def _size_defining_deserializer(self) -> int | None:
        for d, deserializer in enumerate(self._deserializers):
            if any(info.defines_mb_size for info in deserializer.stream_infos()):
                return d
        return None


class SourceWrapper:
    """A minibatch source around another one (read-ahead, truncated-BPTT windows): what a wrapper does
    not change, it hands on to the source it wraps."""

    def __init__(self, source):
        self._source = source

    def streams(self) -> list[StreamInfo]:
        return self._source.streams()

    def stream_infos(self) -> dict[str, tuple[int, bool]]:
        return self._source.stream_infos()

    @property
    def samples_per_sweep(self) -> int:
        return self._source.samples_per_sweep

    def start_epoch(self, epoch: int) -> None:
        self._source.start_epoch(epoch)

    def next_minibatch(self, num_samples: int, rank: int = 0, num_ranks: int = 1) -> Minibatch:
        return self._source.next_minibatch(num_samples, rank, num_ranks)

    def state(self) -> dict:
        return self._source.state()

    def restore(self, state: dict) -> None:
        self._source.restore(state)

    def close(self) -> None:
        self._source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
