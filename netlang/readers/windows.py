"""Truncated BPTT packing: long sequences cut into windows that continue from minibatch to minibatch.

With `truncated = true` a minibatch is not a set of whole sequences but `N` parallel *slots*, each
holding one sequence, of which every minibatch carries the next `truncationLength` (L) steps. When a
slot's sequence ends, the slot takes the next sequence of the epoch in the following minibatch (the
rest of the window is padding: netlang's padded layout starts every sequence at step 0). Slot `n`'s
entry in a minibatch says whether it continues the sequence the slot held in the previous minibatch
(`Minibatch.steps_before` > 0), so the network can carry its recurrent state across — PastValue reads the
last steps of the previous window instead of its initial state — while gradients stop at the window
edge (runtime/truncation.py).

`N` is `minibatchSize / truncationLength` (at least 1), as in CNTK; with the legacy spelling (SGD
`truncated = true`, no `truncationLength`) the window is `minibatchSize` steps and `N` is the reader's
`nbruttsineachrecurrentiter`. Every stream of a sequence must have the same number of steps — a
per-sequence label cannot be cut into windows.

Sequences come from the wrapped `MinibatchSource` in its order (randomized or not) and the epoch ends
when its sequences are used up and every slot has run dry, so no data is dropped. With several
workers, slot `n` belongs to worker `n % num_ranks`. The reader position is (the wrapped source's
state at the epoch start, the minibatches handed out since); `restore` replays those minibatches, so
a prefetching thread can rewind and a run resumes exactly.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from netlang.errors import DataError, DataPosition
from netlang.readers.batch import DenseChunk, Minibatch, SparseChunk, StreamBatch, StreamInfo, offsets_of
from netlang.readers.source import SourceWrapper

STATE_VERSION = 1


@dataclass
class _Sequence:
    """One sequence in a slot: its streams (one-sequence chunks), its length, how far it has been read."""

    streams: dict
    length: int
    key: object
    position: int = 0


class TruncatedSource(SourceWrapper):
    """Wraps a `MinibatchSource`; same interface, minibatches of `parallel` windows of `length` steps."""

    def __init__(self, source, length: int, parallel: int | None = None):
        super().__init__(source)
        self.length = length
        self._parallel = parallel          # None: minibatchSize // length, decided per request
        self._slots: list[_Sequence | None] = []
        self._queue: deque[_Sequence] = deque()
        self._inner_done = False           # the wrapped source has handed out this epoch's last sequence
        self._epoch_state = None
        self._handed_out: list[list] = []  # [[request, count], …] since the epoch started
        self._end_pending = False
        self.start_epoch(0)

    # -- the source interface -------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        self._source.start_epoch(epoch)
        self._epoch_state = self._source.state()
        self._reset()

    def next_minibatch(self, num_samples: int, rank: int = 0, num_ranks: int = 1) -> Minibatch:
        if not 0 <= rank < num_ranks:
            raise ValueError(f"rank {rank} is not in 0..{num_ranks - 1}")
        if self._end_pending:
            # The previous minibatch ended the epoch: this one starts the next.
            self.start_epoch(self._epoch + 1)
        request = (int(num_samples), int(rank), int(num_ranks))
        minibatch = self._next(num_samples, rank, num_ranks)
        if self._handed_out and self._handed_out[-1][0] == request:
            self._handed_out[-1][1] += 1
        else:
            self._handed_out.append([request, 1])
        self._end_pending = minibatch.end_of_epoch
        return minibatch

    def state(self) -> dict:
        return {"version": STATE_VERSION, "truncated": True, "epoch": self._epoch,
                "epoch_start": self._epoch_state, "handed_out": [[list(r), n] for r, n in self._handed_out],
                "end_pending": self._end_pending}

    def restore(self, state: dict) -> None:
        try:
            if int(state["version"]) != STATE_VERSION or not state.get("truncated"):
                raise KeyError("version")
            epoch, start = int(state["epoch"]), state["epoch_start"]
            handed_out = [(tuple(int(v) for v in r), int(n)) for r, n in state["handed_out"]]
            end_pending = bool(state["end_pending"])
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"the saved reader state is not a truncated-BPTT position ({err})",
                            hint="resume with the same reader settings, or start the run afresh") from None
        self._epoch = epoch
        self._source.restore(start)
        self._epoch_state = self._source.state()
        self._reset()
        for request, count in handed_out:      # replay: the windows depend on everything before them
            for _ in range(count):
                self._next(*request)
        self._handed_out = [[r, n] for r, n in handed_out]
        self._end_pending = end_pending

    # -- packing --------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._slots = []
        self._queue.clear()
        self._inner_done = False
        self._handed_out = []
        self._end_pending = False

    def _next(self, num_samples: int, rank: int, num_ranks: int) -> Minibatch:
        parallel = self._parallel or max(1, num_samples // self.length)
        if len(self._slots) < parallel:
            self._slots += [None] * (parallel - len(self._slots))
        for n, held in enumerate(self._slots):
            if held is None:               # the slot's sequence ended: the next one starts there
                self._slots[n] = self._pull() if n < parallel else None
        active = [n for n, held in enumerate(self._slots) if held is not None]
        local = local_of(active, rank, num_ranks)
        steps_before = np.array([self._slots[n].position for n in local], dtype=np.int64)
        windows = {n: self._window(self._slots[n]) for n in active}
        keys = [self._slots[n].key for n in local]
        for n in active:
            held = self._slots[n]
            held.position += self.length
            if held.position >= held.length:
                self._slots[n] = None
        streams = {info.name: StreamBatch(info, _concat(info, [windows[n][info.name] for n in local]))
                   for info in self._source.streams()}
        sizes = {n: _window_size(windows[n]) for n in active}
        end = not self._refill_possible() and all(held is None for held in self._slots)
        return Minibatch(
            streams=streams,
            num_samples=sum(sizes[n] for n in local),
            num_sequences=len(local),
            global_num_samples=sum(sizes.values()),
            global_num_sequences=len(active),
            epoch=self._epoch,
            end_of_epoch=end,
            sweep_end=False,
            keys=keys,
            slots=np.asarray(local, dtype=np.int64),
            steps_before=steps_before,
        )

    def _refill_possible(self) -> bool:
        while not self._queue and not self._inner_done:
            self._fetch()
        return bool(self._queue)

    def _pull(self) -> _Sequence | None:
        if not self._refill_possible():
            return None
        return self._queue.popleft()

    def _fetch(self) -> None:
        """Take the next whole sequences of the epoch from the wrapped source into the queue."""
        minibatch = self._source.next_minibatch(max(self.length * max(len(self._slots), 1), 1))
        self._inner_done = minibatch.end_of_epoch
        names = list(minibatch.streams)
        for i in range(minibatch.num_sequences):
            parts = {name: minibatch.streams[name].data.take(np.array([i])) for name in names}
            lengths = {name: int(part.seq_offsets[-1]) for name, part in parts.items()}
            if len(set(lengths.values())) > 1:
                key = minibatch.keys[i] if i < len(minibatch.keys) else i
                raise DataError(
                    "truncated BPTT cuts sequences into windows, but the streams of sequence "
                    f"{key} have different lengths (" + ", ".join(f"{n}: {v}" for n, v in lengths.items()) + ")",
                    DataPosition(f"sequence {key}"),
                    hint="per-sequence labels cannot be cut into windows; turn truncation off "
                         "(truncated = false) to train on whole sequences")
            if not max(lengths.values(), default=0):
                continue
            key = minibatch.keys[i] if i < len(minibatch.keys) else None
            self._queue.append(_Sequence(parts, max(lengths.values(), default=0), key))

    def _window(self, held: _Sequence) -> dict:
        start, stop = held.position, min(held.position + self.length, held.length)
        return {name: _rows(part, start, stop) for name, part in held.streams.items()}


def local_of(slots: list, rank: int, num_ranks: int) -> list:
    """The slots worker `rank` of `num_ranks` trains on."""
    return [n for n in slots if n % num_ranks == rank]


def _rows(part, start: int, stop: int):
    """Steps `start:stop` of a one-sequence chunk, as a one-sequence chunk."""
    if isinstance(part, DenseChunk):
        return DenseChunk(part.values[start:stop], np.array([0, stop - start], dtype=np.int64))
    lo, hi = int(part.row_offsets[start]), int(part.row_offsets[stop])
    return SparseChunk(part.indices[lo:hi], part.values[lo:hi], part.row_offsets[start:stop + 1] - lo,
                       np.array([0, stop - start], dtype=np.int64))


def _window_size(window: dict) -> int:
    return max((int(part.seq_offsets[-1]) for part in window.values()), default=0)


def _concat(info: StreamInfo, parts: list):
    if parts:
        return type(parts[0]).concat(parts)
    if info.is_sparse:
        return SparseChunk(np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(1, np.int64), offsets_of([]))
    return DenseChunk(np.zeros((0,) + tuple(info.shape), np.float32), offsets_of([]))
