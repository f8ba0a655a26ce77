"""Read ahead: a background thread prepares the next minibatches while the caller computes.

The thread asks the wrapped source for minibatches of the size the caller asked for last, and keeps
up to `depth` of them in a queue. Each prepared minibatch carries the source state from just before
it was read, so nothing is lost when the guess is wrong: if the caller asks for a different size,
rank or epoch, or calls `state()`, the thread is stopped and the source rewound to the first
minibatch the caller has not received. `state()` therefore always describes the next minibatch the
caller will get, exactly as without prefetching.

An exception raised while reading is handed to the caller on the call that would have returned
that minibatch.
"""
from __future__ import annotations

import queue
import threading

from netlang.readers.batch import Minibatch
from netlang.readers.source import MinibatchSource, SourceWrapper

_POLL_SECONDS = 0.05


class _Prepared:
    """One read-ahead result: the state before it, and the minibatch or the error."""

    __slots__ = ("state", "minibatch", "error")

    def __init__(self, state: dict, minibatch: Minibatch | None, error: BaseException | None):
        self.state, self.minibatch, self.error = state, minibatch, error


class PrefetchingSource(SourceWrapper):
    """Wraps a `MinibatchSource`; same interface, minibatches read ahead on a background thread."""

    def __init__(self, source: MinibatchSource, depth: int = 2):
        if depth < 1:
            raise ValueError("prefetch depth must be ≥ 1")
        super().__init__(source)
        self._depth = depth
        self._queue: queue.Queue[_Prepared] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._request: tuple[int, int, int] | None = None
        self._held: _Prepared | None = None      # prepared but not queued when the thread was stopped

    # -- the source interface: every call that moves the source first stops the thread ------------

    def next_minibatch(self, num_samples: int, rank: int = 0, num_ranks: int = 1) -> Minibatch:
        request = (num_samples, rank, num_ranks)
        if request != self._request or self._thread is None:
            self._pause()
            self._request = request
            self._start()
        prepared = self._queue.get()
        if prepared.error is not None:
            self._pause()          # the thread has ended; a failed read left the source in place
            raise prepared.error
        return prepared.minibatch

    def start_epoch(self, epoch: int) -> None:
        self._pause()
        self._source.start_epoch(epoch)

    def state(self) -> dict:
        self._pause()
        return self._source.state()

    def restore(self, state: dict) -> None:
        self._pause()
        self._source.restore(state)

    def close(self) -> None:
        self._pause()
        self._source.close()

    # -- the thread -----------------------------------------------------------------------------

    def _start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(self._request,), name="netlang-prefetch",
                                        daemon=True)
        self._thread.start()

    def _run(self, request: tuple[int, int, int]) -> None:
        while not self._stop.is_set():
            state = self._source.state()
            try:
                prepared = _Prepared(state, self._source.next_minibatch(*request), None)
            except BaseException as err:  # noqa: BLE001 - handed to the caller, who decides
                prepared = _Prepared(state, None, err)
            if not self._put(prepared) or prepared.error is not None:
                return

    def _put(self, prepared: _Prepared) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(prepared, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        self._held = prepared
        return False

    def _pause(self) -> None:
        """Stop the thread and rewind the source to the first minibatch not yet handed out."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        undelivered = []
        while not self._queue.empty():
            undelivered.append(self._queue.get_nowait())
        if self._held is not None:
            undelivered.append(self._held)
            self._held = None
        if undelivered:
            self._source.restore(undelivered[0].state)
