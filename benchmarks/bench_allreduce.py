"""Bytes on the wire and time per step of gradient aggregation: 32-bit all-reduce vs k-bit.

The gradient is that of the MNIST 784-200-10 MLP (159,010 parameters): W1 (200:784), b1 (200),
W2 (10:200), b2 (10) in BrainScript shapes. Run with `python benchmarks/bench_allreduce.py`
(it re-launches itself under `mpiexec -n 2`) or `mpiexec -n K python benchmarks/bench_allreduce.py`.
Options: --steps N (default 200), --bits 32,1,2,4,8.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np

# Run-time (row-major) shapes: the BrainScript shapes reversed.
MLP_SHAPES = [(784, 200), (200,), (200, 10), (10,)]


def layout():
    segments, offset = [], 0
    for shape in MLP_SHAPES:
        segments.append((offset, shape))
        offset += int(np.prod(shape))
    return segments, offset


def measure(comm, bits: int, steps: int) -> tuple[float, float]:
    """(bytes this rank sent per step, median seconds per step) for `bits`."""
    from netlang.runtime.distributed import GradientAggregator

    segments, size = layout()
    agg = GradientAggregator(comm, segments, size, np.float32, bits)
    rng = np.random.default_rng(comm.rank)
    grads = [rng.standard_normal(size).astype(np.float32) * np.float32(0.01) for _ in range(4)]
    for g in grads:  # warm-up
        agg.aggregate(g.copy(), 64)
    comm.barrier()
    times, before = [], comm.bytes_sent
    for step in range(steps):
        g = grads[step % len(grads)].copy()
        start = time.perf_counter()
        agg.aggregate(g, 64)
        times.append(time.perf_counter() - start)
    return (comm.bytes_sent - before) / steps, float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--bits", default="32,1,2,4,8")
    args = parser.parse_args()

    from netlang.runtime.distributed import detect_launch, get_communicator

    if detect_launch() is None:
        mpiexec = shutil.which("mpiexec")
        if mpiexec is None:
            sys.exit("mpiexec not found: pip install 'netlang[mpi]'")
        sys.exit(subprocess.call([mpiexec, "-n", "2", sys.executable, os.path.abspath(__file__),
                                  *sys.argv[1:]]))

    comm = get_communicator(True)
    results = {bits: measure(comm, bits, args.steps) for bits in map(int, args.bits.split(","))}
    if comm.rank != 0:
        return
    _, size = layout()
    print(f"gradient: {size:,} float32 parameters (MNIST 784-200-10 MLP), {comm.size} ranks, "
          f"{args.steps} steps")
    print(f"{'bits':>5} {'bytes/step':>12} {'vs 32-bit':>10} {'ms/step':>9}")
    full = results.get(32, (None,))[0]
    for bits, (sent, seconds) in results.items():
        ratio = f"1/{full / sent:.1f}" if full and bits != 32 else ""
        print(f"{bits:>5} {sent:>12,.0f} {ratio:>10} {seconds * 1e3:>9.3f}")
    print("(bytes: what this rank put on the wire per step, incl. the 8-byte sample count)")


if __name__ == "__main__":
    main()
