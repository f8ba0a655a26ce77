"""How fast are the CPU convolution (and batch-norm) kernels, against PyTorch on the same machine?

Times forward and forward+backward of 3×3 "same" convolutions (float32, batch 128 by default)
through the op registry, exactly as the executor drives them, best of several runs after a
warm-up. When `torch` is importable the same layers run through `torch.nn.functional.conv2d`
(and `batch_norm`) with autograd, interleaved with ours so that machine noise hits both alike,
and the ratio netlang / torch is printed.

Two tables: the requested sweep of layers at one size, and the layers of ResNet-20 on 32×32
CIFAR images (conv1, three stages of 16/32/64 channels at 32/16/8 pixels, the two stride-2
transitions and their 1×1 projections, batch norm after every convolution), weighted by how
often each occurs, which is what the 2×-of-PyTorch goal is about.

    python benchmarks/bench_conv.py [--batch 128] [--size 32] [--layers 3:16,16:32,32:64] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from netlang.ops import registry
from netlang.ops.registry import OpContext

try:
    import torch
    import torch.nn.functional as F
except ImportError:            # the comparison is optional
    torch = None

# ResNet-20 (He et al. 2016, CIFAR variant): (count, in channels, out channels, image size, stride, kernel)
RESNET20_CONVS = [
    (1, 3, 16, 32, 1, 3),
    (6, 16, 16, 32, 1, 3),
    (1, 16, 32, 32, 2, 3), (1, 16, 32, 32, 2, 1), (5, 32, 32, 16, 1, 3),
    (1, 32, 64, 16, 2, 3), (1, 32, 64, 16, 2, 1), (5, 64, 64, 8, 1, 3),
]
# Batch norm after each 3×3 convolution: (count, channels, image size)
RESNET20_BN = [(7, 16, 32), (6, 32, 16), (6, 64, 8)]


def best_of(repeat: int, fn) -> float:
    fn()                                     # warm-up: caches, allocator, BLAS threads
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# ---- netlang -------------------------------------------------------------------------------------

def netlang_conv(batch, cin, cout, size, stride, kernel, rng):
    op = registry.get("Convolution")
    x = rng.standard_normal((batch, cin, size, size), dtype=np.float32)
    w = rng.standard_normal((cout, cin, kernel, kernel), dtype=np.float32)
    attrs = {"kernelShape": (kernel, kernel), "mapCount": cout, "strideShape": stride, "autoPadding": True}

    def forward():
        ctx = OpContext(xp=np, dyn=[0, 1], out_dyn=1, training=True)
        return ctx, registry.apply_forward(op, ctx, [w, x], attrs, 3)

    def both():
        ctx, y = forward()
        registry.apply_backward(op, ctx, [w, x], y, np.ones_like(y), attrs, 3)

    return (lambda: forward()), both


def netlang_bn(batch, channels, size, rng):
    op = registry.get("BatchNormalization")
    x = rng.standard_normal((batch, channels, size, size), dtype=np.float32)
    params = [np.ones(channels, np.float32), np.zeros(channels, np.float32), np.zeros(channels, np.float32),
              np.ones(channels, np.float32), np.zeros(1, np.float32)]
    attrs = {"spatial": True, "normalizationTimeConstant": 4096}

    def forward():
        ctx = OpContext(xp=np, dyn=[1, 0, 0, 0, 0, 0], out_dyn=1, training=True)
        return ctx, registry.apply_forward(op, ctx, [x] + params, attrs, 3)

    def both():
        ctx, y = forward()
        registry.apply_backward(op, ctx, [x] + params, y, np.ones_like(y), attrs, 3)

    return (lambda: forward()), both


# ---- torch ---------------------------------------------------------------------------------------

def torch_conv(batch, cin, cout, size, stride, kernel, rng):
    x = torch.from_numpy(rng.standard_normal((batch, cin, size, size), dtype=np.float32)).requires_grad_()
    w = torch.from_numpy(rng.standard_normal((cout, cin, kernel, kernel), dtype=np.float32)).requires_grad_()
    pad = kernel // 2

    def forward():
        with torch.no_grad():
            return F.conv2d(x, w, stride=stride, padding=pad)

    def both():
        y = F.conv2d(x, w, stride=stride, padding=pad)
        torch.autograd.grad(y, (x, w), torch.ones_like(y))

    return forward, both


def torch_bn(batch, channels, size, rng):
    x = torch.from_numpy(rng.standard_normal((batch, channels, size, size), dtype=np.float32)).requires_grad_()
    scale, bias = torch.ones(channels, requires_grad=True), torch.zeros(channels, requires_grad=True)
    mean, var = torch.zeros(channels), torch.ones(channels)

    def forward():
        with torch.no_grad():
            return F.batch_norm(x, mean, var, scale, bias, training=True)

    def both():
        y = F.batch_norm(x, mean, var, scale, bias, training=True)
        torch.autograd.grad(y, (x, scale, bias), torch.ones_like(y))

    return forward, both


# ---- reporting -----------------------------------------------------------------------------------

def measure(ours, theirs, repeat):
    """(our forward, our fwd+bwd, their forward, their fwd+bwd) in seconds, interleaved."""
    times = [best_of(repeat, ours[0]), None, None, None]
    if theirs:
        times[2] = best_of(repeat, theirs[0])
    times[1] = best_of(repeat, ours[1])
    if theirs:
        times[3] = best_of(repeat, theirs[1])
    return times


def row(label, times, count=1):
    ms = [None if t is None else t * 1e3 * count for t in times]
    text = f"{label:<30} {ms[0]:9.1f} {ms[1]:10.1f}"
    if ms[2] is not None:
        text += f" {ms[2]:9.1f} {ms[3]:10.1f} {ms[1] / ms[3]:7.2f}x"
    print(text)
    return ms


def header(title):
    print(f"\n{title}")
    cols = f"{'layer':<30} {'fwd ms':>9} {'fwd+bwd':>10}"
    if torch is not None:
        cols += f" {'torch fwd':>9} {'torch f+b':>10} {'ratio':>8}"
    print(cols)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--layers", default="3:16,16:32,32:64", help="in:out channel pairs of the sweep")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-resnet", action="store_true", help="skip the ResNet-20 table")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    threads = f", torch {torch.__version__} with {torch.get_num_threads()} threads" if torch is not None else \
        " (torch not importable: no comparison)"
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs{threads}; float32, batch {args.batch}, best of {args.repeat}")

    header(f"3x3 same convolutions at {args.size}x{args.size}")
    for pair in args.layers.split(","):
        cin, cout = (int(v) for v in pair.split(":"))
        shape = (args.batch, cin, cout, args.size, 1, 3)
        theirs = torch_conv(*shape, rng) if torch is not None else None
        row(f"{cin}->{cout}", measure(netlang_conv(*shape, rng), theirs, args.repeat))

    if args.no_resnet:
        return
    header(f"ResNet-20 layers (ms per minibatch, all occurrences)")
    totals = np.zeros(4)
    for count, cin, cout, size, stride, kernel in RESNET20_CONVS:
        shape = (args.batch, cin, cout, size, stride, kernel)
        theirs = torch_conv(*shape, rng) if torch is not None else None
        times = measure(netlang_conv(*shape, rng), theirs, args.repeat)
        ms = row(f"{count}x conv {kernel}x{kernel} {cin}->{cout} @{size} s{stride}", times, count)
        totals += [m or 0.0 for m in ms]
    for count, channels, size in RESNET20_BN:
        theirs = torch_bn(args.batch, channels, size, rng) if torch is not None else None
        times = measure(netlang_bn(args.batch, channels, size, rng), theirs, args.repeat)
        ms = row(f"{count}x batch norm {channels} @{size}", times, count)
        totals += [m or 0.0 for m in ms]
    text = f"{'total':<30} {totals[0]:9.1f} {totals[1]:10.1f}"
    if torch is not None:
        text += f" {totals[2]:9.1f} {totals[3]:10.1f} {totals[1] / totals[3]:7.2f}x"
    print(text)


if __name__ == "__main__":
    main()
