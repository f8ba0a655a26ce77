"""The verify-on-GPU checks of reference/gpu.md §6 item 12 that the GPU engine relies on.

1. cuDNN frontend convolutions in float32, NCHW and NHWC: does a plan build for forward,
   backward-data and backward-filter on ResNet-50's shapes, and how long does each take, against
   netlang's im2col kernels on CuPy (the fallback). This is the layout measurement: netlang's
   arrays are NCHW, so NHWC would pay off only if its convolutions were clearly faster.
2. frontend `execute` inside a CuPy stream capture (what issue 13's CUDA graphs need), with the
   handle's stream set before `begin_capture`.
3. `cupy.random.Generator` draws inside a capture. On an H200 (CuPy 14.2) a replay gave the same
   numbers as the draw before the capture, which is why netlang's GPU stream is counter-based
   (runtime/gpu/random.py; tests/test_gpu.py checks that its replays move on).

    python benchmarks/gpu/probes.py      # prints one line per check; exit 0 even if a check fails
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import cupy  # noqa: E402 - the probes run only where CuPy is

from netlang.ops import conv as conv_ops  # noqa: E402
from netlang.runtime.backend import select_backend  # noqa: E402

# (name, N, C, H, W, K, kernel, stride): ResNet-50's convolution kinds at batch 64.
SHAPES = [
    ("conv1 7x7/2 3->64 224", 64, 3, 224, 224, 64, 7, 2),
    ("3x3 64->64 56", 64, 64, 56, 56, 64, 3, 1),
    ("1x1 64->256 56", 64, 64, 56, 56, 256, 1, 1),
    ("1x1/2 512->1024 28", 64, 512, 28, 28, 1024, 1, 2),
    ("3x3 256->256 14", 64, 256, 14, 14, 256, 3, 1),
]


def seconds(fn, repeat: int = 10) -> float:
    fn()
    cupy.cuda.get_current_stream().synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    return (time.perf_counter() - start) / repeat


def geometry(c, h, w, k, kernel, stride):
    attrs = {"kernelShape": (kernel, kernel), "strideShape": stride, "mapCount": k}
    geo = conv_ops.geometry_for((w, h, c), (kernel, kernel, c, k), attrs, False)
    return geo, conv_ops.cudnn_convolution(geo)


def layout_arrays(layout, n, c, h, w, k, kernel, conv):
    """x, w, y, dy in cuDNN's logical NCHW dims, stored NCHW or NHWC."""
    oh, ow = conv.y_dims[1:]
    if layout == "NCHW":
        return (cupy.random.random((n, c, h, w), dtype=np.float32),
                cupy.random.random((k, c, kernel, kernel), dtype=np.float32),
                cupy.empty((n, k, oh, ow), dtype=np.float32), cupy.random.random((n, k, oh, ow), dtype=np.float32))
    to_nchw = (0, 3, 1, 2)
    return (cupy.random.random((n, h, w, c), dtype=np.float32).transpose(to_nchw),
            cupy.random.random((k, kernel, kernel, c), dtype=np.float32).transpose(to_nchw),
            cupy.empty((n, oh, ow, k), dtype=np.float32).transpose(to_nchw),
            cupy.random.random((n, oh, ow, k), dtype=np.float32).transpose(to_nchw))


def probe_convolutions(backend) -> None:
    service = backend.cudnn
    if service is None:
        print("conv: cuDNN frontend not available; nothing to measure")
        return
    print(f"conv: cuDNN frontend {service.version}; times in ms (fprop / dgrad / wgrad)")
    for name, n, c, h, w, k, kernel, stride in SHAPES:
        geo, conv = geometry(c, h, w, k, kernel, stride)
        line = f"  {name:26s}"
        for layout in ("NCHW", "NHWC"):
            x, f, y, dy = layout_arrays(layout, n, c, h, w, k, kernel, conv)
            dx, dw = cupy.empty_like(x), cupy.empty_like(f)
            runs = {"fprop": lambda: service._run("fprop", conv, x, f, y),
                    "dgrad": lambda: service._run("dgrad", conv, dy, f, dx),
                    "wgrad": lambda: service._run("wgrad", conv, x, dy, dw)}
            times = []
            for kind, run in runs.items():
                try:
                    times.append(f"{seconds(run) * 1000:7.2f}" if run() else "   none")
                except Exception as err:  # noqa: BLE001
                    times.append(f" error {type(err).__name__}")
            line += f" | {layout} " + " ".join(times)
        xb = cupy.random.random((n, c, h, w), dtype=np.float32)
        w2 = cupy.random.random((k, c * kernel * kernel), dtype=np.float32)
        gy = cupy.random.random((n, k) + tuple(conv.y_dims[1:]), dtype=np.float32)
        fwd = seconds(lambda: conv_ops.conv_forward(xb, w2, geo, cupy), repeat=3)
        bwd = seconds(lambda: conv_ops.conv_backward(xb, w2, gy, geo, cupy), repeat=3)
        print(line + f" | im2col fprop {fwd * 1000:7.2f} dgrad+wgrad {bwd * 1000:7.2f}", flush=True)
    declined = service.declined
    print(f"conv: declined shapes: {len(declined)}" + "".join(f"\n  {v}" for v in list(declined.values())[:5]))
    for dtype in (np.float64,):
        geo, conv = geometry(16, 12, 12, 8, 3, 1)
        x = cupy.random.random((4, 16, 12, 12)).astype(dtype)
        f = cupy.random.random((8, 16, 3, 3)).astype(dtype)
        print(f"conv: float64 forward plan: {'yes' if service.forward(x, f, conv) is not None else 'no (im2col)'}")


def probe_capture(backend) -> None:
    service = backend.cudnn
    stream = cupy.cuda.Stream(non_blocking=True)
    if service is not None:
        geo, conv = geometry(64, 56, 56, 64, 3, 1)
        x = cupy.random.random((8, 64, 56, 56), dtype=np.float32)
        f = cupy.random.random((64, 64, 3, 3), dtype=np.float32)
        with stream:
            eager = service.forward(x, f, conv)            # builds the graph, sets the stream
            y = cupy.empty_like(eager)
            try:
                stream.begin_capture()
                service._run("fprop", conv, x, f, y)
                graph = stream.end_capture()
                y.fill(0)
                graph.launch(stream)
                stream.synchronize()
                print(f"capture: cuDNN frontend execute inside a stream capture: ok, replay equal "
                      f"{bool(cupy.allclose(y, eager))}")
            except Exception as err:  # noqa: BLE001
                if stream.is_capturing():
                    stream.end_capture()
                print(f"capture: cuDNN frontend execute inside a stream capture: FAILED {type(err).__name__}: {err}")
    generator = cupy.random.Generator(cupy.random.XORWOW(seed=1))
    with stream:
        try:
            out = cupy.empty(1024, dtype=np.float64)
            generator.random(1024, out=out)
            stream.begin_capture()
            generator.random(1024, out=out)
            graph = stream.end_capture()
            first = out.copy()
            graph.launch(stream)
            stream.synchronize()
            print(f"capture: cupy.random.Generator inside a capture: ok, replays draw new numbers "
                  f"{not bool(cupy.allclose(first, out))}")
        except Exception as err:  # noqa: BLE001
            if stream.is_capturing():
                stream.end_capture()
            print(f"capture: cupy.random.Generator inside a capture: FAILED {type(err).__name__}: {err}")


def main() -> None:
    backend = select_backend(0, "float")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print(f"device: {props['name'].decode()}, CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")
    for probe in (probe_convolutions, probe_capture):
        try:
            probe(backend)
        except Exception as err:  # noqa: BLE001 - one failed probe does not hide the others
            print(f"{probe.__name__}: FAILED {type(err).__name__}: {err}", flush=True)


if __name__ == "__main__":
    main()
