"""cuDNN's convolutions through the cuDNN frontend's Python graph API, for the CuPy backend.

CuPy 14 has no cuDNN; the frontend (`nvidia-cudnn-frontend`, pinned in the `gpu` extra, with the
`nvidia-cudnn-cu13` library) builds and runs cuDNN graphs. Following reference/gpu.md §1.1:

* one frontend handle per device, bound to CuPy's current stream before every execution (the
  frontend skips the call when the stream is unchanged);
* one single-operation graph per (operation, shapes, strides, dtype, padding, stride, dilation):
  forward (`conv_fprop`), backward-data (`conv_dgrad`) and backward-filter (`conv_wgrad`), built
  once with heuristics A then FALLBACK, deterministic engines preferred, and cached; tensors are
  declared with explicit dims, strides and types (never inferred from arrays), outputs with the
  strides we allocate;
* buffers go to `execute` as raw device pointers (`.data.ptr`), the workspace is one CuPy array
  from CuPy's memory pool, grown to the largest graph's need — no DLPack, no host synchronisation,
  nothing that stream capture forbids;
* a shape for which cuDNN builds no plan (or float64, where its engines may be missing) is
  remembered as unsupported and the op runs its im2col kernels instead (`supports`).

Layout: netlang's arrays are NCHW (row-major `[N, C, H, W]`, the reversed BrainScript `W:H:C`),
and the graphs are declared NCHW so no transposes surround a convolution. gpu.md notes the
frontend's samples are NHWC-first; benchmarks/gpu/probes.py measures both layouts on the device.

The frontend module and CuPy are handed in by runtime/backend.py; this module imports neither.
"""
from __future__ import annotations

import numpy as np

HEURISTICS = ("A", "FALLBACK")


def packed_strides(dims) -> list[int]:
    """Row-major strides (in elements) of a packed array of `dims`."""
    strides, step = [], 1
    for d in reversed(dims):
        strides.append(step)
        step *= int(d)
    return list(reversed(strides))


def strides_of(array) -> list[int]:
    """An array's strides in elements, as cuDNN takes them."""
    return [int(s) // array.itemsize for s in array.strides]


def graph_key(kind: str, conv, dtype, *arrays) -> tuple:
    """What a graph is built for: the operation, its geometry and every operand's shape and strides."""
    described = tuple((tuple(int(d) for d in a.shape), tuple(strides_of(a))) for a in arrays)
    return (kind, np.dtype(dtype).name, conv.pre, conv.post, conv.stride, conv.dilation, described)


class CudnnService:
    """Builds, caches and runs the convolution graphs (the CuPy backend's `cudnn`)."""

    def __init__(self, cupy, cudnn):
        self._cupy = cupy
        self._cudnn = cudnn
        self._handle = cudnn.create_handle()
        self._graphs: dict[tuple, object] = {}
        self._unsupported: dict[tuple, str] = {}      # key -> why cuDNN declined
        self._workspace = cupy.empty(0, dtype=np.uint8)
        self.version = getattr(cudnn, "__version__", "?")

    # ---- what the ops call ---------------------------------------------------------------------
    def supports(self, conv, dtype) -> bool:
        """False once cuDNN has declined a geometry of this dtype (the op then uses im2col)."""
        return (np.dtype(dtype).name, conv) not in self._unsupported

    def forward(self, x, w, conv):
        """y = conv(x) as a new (N, *y_dims) array, or None if cuDNN declines this shape."""
        y = self._cupy.empty((x.shape[0],) + tuple(conv.y_dims), dtype=x.dtype)
        return y if self._run("fprop", conv, x, w, y) else None

    def backward_data(self, dy, w, conv, dx) -> bool:
        """dx = the input gradient of conv for dy; False if cuDNN declines this shape."""
        return self._run("dgrad", conv, dy, w, dx)

    def backward_filter(self, x, dy, conv, dw) -> bool:
        """dw = the filter gradient of conv for (x, dy); False if cuDNN declines this shape."""
        return self._run("wgrad", conv, x, dy, dw)

    @property
    def declined(self) -> dict:
        return dict(self._unsupported)

    # ---- graphs --------------------------------------------------------------------------------
    def _run(self, kind: str, conv, a, b, out) -> bool:
        key = graph_key(kind, conv, out.dtype, a, b, out)
        entry = self._graphs.get(key)
        if entry is None:
            if not self.supports(conv, out.dtype):
                return False
            try:
                entry = self._graphs[key] = self._deterministic_or_any(kind, conv, a, b, out)
            except Exception as err:      # noqa: BLE001 - any frontend failure: no plan for this shape
                self._unsupported[(np.dtype(out.dtype).name, conv)] = f"{kind}: {type(err).__name__}: {err}"
                return False
        graph, tensors, workspace = entry
        if workspace > self._workspace.size:
            self._workspace = self._cupy.empty(workspace, dtype=np.uint8)
        self._cudnn.set_stream(handle=self._handle, stream=self._cupy.cuda.get_current_stream().ptr)
        pointers = {tensor: array.data.ptr for tensor, array in zip(tensors, (a, b, out))}
        graph.execute(pointers, self._workspace.data.ptr, handle=self._handle)
        return True

    def _data_type(self, dtype):
        types = self._cudnn.data_type
        return types.DOUBLE if np.dtype(dtype) == np.float64 else types.FLOAT

    def _deterministic_or_any(self, kind: str, conv, a, b, out):
        # Engines that reduce with atomics (split-K backward-filter, mostly) give a different sum on
        # every run, so the same seeds would not give the same losses and a replayed CUDA graph
        # could not be checked against the eager step. Deterministic engines first; any engine only
        # where cuDNN has no deterministic one for the shape.
        try:
            return self._build(kind, conv, a, b, out, deterministic=True)
        except Exception:                 # noqa: BLE001 - no deterministic plan: take what cuDNN has
            return self._build(kind, conv, a, b, out, deterministic=False)

    def _build(self, kind: str, conv, a, b, out, deterministic: bool):
        cudnn = self._cudnn
        io = self._data_type(out.dtype)
        graph = cudnn.pygraph(io_data_type=io, intermediate_data_type=io, compute_data_type=io,
                              handle=self._handle)
        first = graph.tensor(name="a", dim=list(a.shape), stride=strides_of(a), data_type=io)
        second = graph.tensor(name="b", dim=list(b.shape), stride=strides_of(b), data_type=io)
        geometry = {"pre_padding": list(conv.pre), "post_padding": list(conv.post), "stride": list(conv.stride),
                    "dilation": list(conv.dilation), "compute_data_type": io}
        if kind == "fprop":
            result = graph.conv_fprop(first, second, **geometry)
        elif kind == "dgrad":
            result = graph.conv_dgrad(first, second, out_dims=list(out.shape), **geometry)
        else:
            result = graph.conv_wgrad(first, second, out_dims=list(out.shape), **geometry)
        result.set_output(True).set_data_type(io).set_dim(list(out.shape)).set_stride(strides_of(out))
        if deterministic:
            graph.deselect_numeric_notes([cudnn.numerical_note.NONDETERMINISTIC])
        graph.build([getattr(cudnn.heur_mode, mode) for mode in HEURISTICS])
        return graph, (first, second, result), int(graph.get_workspace_size())
