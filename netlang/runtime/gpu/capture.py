"""CUDA-graph capture of a step on CuPy 14 (the CuPy backend's `graphs`; runtime/stepgraph.py drives it).

Following reference/gpu.md §2:

* capture runs on a dedicated non-blocking stream (capture on the legacy default stream is refused)
  in CuPy's relaxed mode (its default: the memory pool may still call cudaMalloc);
* each captured step gets a private `MemoryPool`, active (`using_allocator`) during its capture only:
  the graph's addresses are baked in, so no other allocation may ever reuse a block the graph uses
  (§2.3 rule 3). Everything allocated in the capture that outlives it (the body's result) is held by
  the handle; blocks the step frees during capture are reused later in the same capture, which the
  replay repeats in the same order. The pool's size is the step's arena on the device: the memory
  plan (compiler/graph/memory.py) predicts its value and gradient part; `memory_bytes` measures it;
* the warm-up and capture run inside `scope()`, which makes the capture stream CuPy's current stream,
  so every kernel, cuDNN execute (its handle's stream is set per call) and cuBLAS call
  (runtime/gpu/gemm.py rebinds its handle when the stream changes) goes there;
* the capture stream joins the compute stream both ways around a warm-up or a replay (events), so
  steps stay ordered with the eager work of the trainer (its totals, the input staging's copies).
"""
from __future__ import annotations

from contextlib import contextmanager


class CapturedStep:
    def __init__(self, graph, result, pool):
        self.graph = graph
        self.result = result          # the body's device arrays, rewritten by every replay
        self.pool = pool              # keeps the graph's memory from any other use


class CudaGraphs:
    def __init__(self, cupy):
        self._cupy = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def _join(self, waiting, done) -> None:
        event = self._cupy.cuda.Event(disable_timing=True)
        event.record(done)
        waiting.wait_event(event)

    @contextmanager
    def scope(self):
        """The capture stream as the current stream, ordered after and before the compute stream."""
        compute = self._cupy.cuda.get_current_stream()
        self._join(self.stream, compute)
        try:
            with self.stream:
                yield
        finally:
            self._join(compute, self.stream)

    def capture(self, body) -> CapturedStep:
        """`body` recorded (not run) into a graph, with a private memory pool."""
        cupy = self._cupy
        pool = cupy.cuda.MemoryPool()
        stream = self.stream
        with cupy.cuda.using_allocator(pool.malloc):
            stream.begin_capture()
            try:
                result = body()
            except BaseException:
                stream.end_capture()         # the half-recorded graph is dropped
                raise
            graph = stream.end_capture()
        graph.upload(stream)
        return CapturedStep(graph, result, pool)

    def launch(self, handle: CapturedStep):
        with self.scope():
            handle.graph.launch(self.stream)
        return handle.result

    def memory_bytes(self, handle: CapturedStep) -> int:
        return int(handle.pool.total_bytes())
