"""Minibatches to the device without stopping it: pinned staging, a copy stream, double buffers.

`StagingRing.upload(key, host_array, dtype)` returns a device array holding `host_array`:

1. the data is written (converted to `dtype`) into the next of a few pinned host slots; a slot is
   rewritten only after the copy that last read it has run (the host waits there only when it is
   that many uploads ahead of the device);
2. the copy runs on a separate copy stream into one of two device buffers kept per `key` (an input
   name), alternating, so minibatch k+1 is copied while the compute stream still works on
   minibatch k; before writing a buffer, the copy stream waits for the compute work queued up to the
   previous upload of the key, the last work that could read that buffer;
3. the compute stream waits for the copy (an event), so kernels see the data; the host never does.

Buffers grow to the largest minibatch seen and are viewed at each one's shape. A buffer that had to
grow is written only after all compute work queued so far (it is fresh memory from the pool, which
may hand out blocks that queued work still uses).

The device side is reached through a `Transfers` object; `CupyTransfers` is CuPy's, and the tests
drive the same ring with NumPy stand-ins.
"""
from __future__ import annotations

import numpy as np

PINNED_SLOTS = 4


class StagingRing:
    def __init__(self, transfers, slots: int = PINNED_SLOTS):
        self.transfers = transfers
        self._pinned = [None] * slots            # uint8 host buffers
        self._pinned_done = [None] * slots       # copy-stream event after the copy that read the slot
        self._next = 0
        self._device: dict = {}                  # key -> [two uint8 device buffers]
        self._turn: dict = {}                    # key -> which buffer the next upload writes
        self._released: dict = {}                # key -> compute event: earlier readers are done
        self.grown = 0                           # device buffers (re)allocated, for the tests

    def upload(self, key, host_array, dtype=None):
        host_array = np.asarray(host_array)
        dtype = np.dtype(dtype or host_array.dtype)
        nbytes = int(host_array.size) * dtype.itemsize
        staged = self._stage(host_array, dtype, nbytes)
        target, fresh = self._device_buffer(key, nbytes)
        t = self.transfers
        wait_for = t.compute_event() if fresh else self._released.get(key)
        if wait_for is not None:
            t.copy_waits(wait_for)
        t.copy_async(target[:nbytes], staged)
        done = t.copy_event()
        self._pinned_done[self._last_slot] = done
        t.compute_waits(done)
        self._released[key] = t.compute_event()
        return t.view(target[:nbytes], dtype, host_array.shape)

    def _stage(self, host_array, dtype, nbytes: int):
        slot = self._next
        self._next = (slot + 1) % len(self._pinned)
        self._last_slot = slot
        pending = self._pinned_done[slot]
        if pending is not None:
            self.transfers.host_waits(pending)
        buffer = self._pinned[slot]
        if buffer is None or buffer.nbytes < nbytes:
            buffer = self._pinned[slot] = self.transfers.pinned(max(nbytes, 2 * (0 if buffer is None else buffer.nbytes)))
        view = buffer[:nbytes].view(dtype).reshape(host_array.shape)
        np.copyto(view, host_array, casting="unsafe")
        return buffer[:nbytes]

    def _device_buffer(self, key, nbytes: int):
        pair = self._device.setdefault(key, [None, None])
        turn = self._turn.get(key, 0)
        self._turn[key] = 1 - turn
        buffer = pair[turn]
        if buffer is not None and buffer.nbytes >= nbytes:
            return buffer, False
        pair[turn] = self.transfers.device_bytes(max(nbytes, 1))
        self.grown += 1
        return pair[turn], True


class CupyTransfers:
    """The ring's device operations on CuPy: a non-blocking copy stream beside the current stream."""

    def __init__(self, cupy):
        self._cupy = cupy
        self._copy_stream = cupy.cuda.Stream(non_blocking=True)

    def pinned(self, nbytes: int):
        memory = self._cupy.cuda.alloc_pinned_memory(nbytes)
        return np.frombuffer(memory, dtype=np.uint8, count=nbytes)

    def device_bytes(self, nbytes: int):
        return self._cupy.empty(nbytes, dtype=np.uint8)

    def copy_async(self, device_bytes, host_bytes) -> None:
        device_bytes.set(host_bytes, stream=self._copy_stream)

    def _event(self, stream):
        event = self._cupy.cuda.Event(disable_timing=True)
        event.record(stream)
        return event

    def copy_event(self):
        return self._event(self._copy_stream)

    def compute_event(self):
        return self._event(self._cupy.cuda.get_current_stream())

    def copy_waits(self, event) -> None:
        self._copy_stream.wait_event(event)

    def compute_waits(self, event) -> None:
        self._cupy.cuda.get_current_stream().wait_event(event)

    def host_waits(self, event) -> None:
        event.synchronize()

    def view(self, device_bytes, dtype, shape):
        return device_bytes.view(dtype).reshape(shape)
