"""CTF reading throughput on a generated MNIST-sized file.

    python benchmarks/bench_ctf.py                 # 60000 lines like Train-28x28_cntk_text.txt
    python benchmarks/bench_ctf.py --values float  # the same shape with 4-decimal floats
    python benchmarks/bench_ctf.py --lines 10000 --minibatch 128

Measures, on one file: the index pass (MB/s), parsing every chunk (MB/s, values/s), and sweeps of
minibatches converted to dense arrays, without and with prefetch (samples/s): the first sweep
(parsing included), a second one (chunks cached), and a second one with simulated compute per
minibatch (`--compute` matrix products 256x784 @ 784x512, which release the GIL as real kernels do).
The file is MNIST-like: 784 pixels, most of them 0, the rest 1–255, and a one-hot label of 10.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from netlang.datasets.mnist import ctf_lines
from netlang.readers.ctf import CtfDeserializer, CtfStream, build_index
from netlang.readers.prefetch import PrefetchingSource
from netlang.readers.source import MinibatchSource

STREAMS = [CtfStream("features", 784), CtfStream("labels", 10)]


def generate(path: str, lines: int, values: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        for start in range(0, lines, 8192):
            n = min(8192, lines - start)
            images = np.where(rng.random((n, 784)) < 0.19, rng.integers(1, 256, (n, 784)), 0).astype(np.uint8)
            labels = rng.integers(0, 10, n)
            if values == "int":
                fh.write(ctf_lines(images, labels))
            else:
                floats = images / 255.0
                text = "".join(f"|labels {' '.join('1' if k == y else '0' for k in range(10))} |features "
                               + " ".join(f"{v:.4f}" for v in row) + "\n" for row, y in zip(floats, labels))
                fh.write(text.encode())


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def sweep(source, minibatch: int, compute: int = 0) -> int:
    weights = np.ones((784, 512), dtype=np.float32)
    samples = 0
    while True:
        mb = source.next_minibatch(minibatch)
        features = mb["features"].to_dense_batch()
        mb["labels"].to_dense_batch()
        for _ in range(compute):
            features @ weights
        samples += mb.num_samples
        if mb.end_of_epoch:
            return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=60000)
    parser.add_argument("--values", choices=("int", "float"), default="int")
    parser.add_argument("--minibatch", type=int, default=256)
    parser.add_argument("--chunk-mb", type=float, default=32)
    parser.add_argument("--compute", type=int, default=3, help="matrix products per minibatch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.ctf")
        _, seconds = timed(lambda: generate(path, args.lines, args.values))
        mb = os.path.getsize(path) / 1e6
        print(f"file: {args.lines} lines, {mb:.1f} MB ({args.values} values), generated in {seconds:.1f} s")
        chunk = int(args.chunk_mb * (1 << 20))
        index, seconds = timed(lambda: build_index(path, STREAMS, chunk_size_bytes=chunk))
        print(f"index:  {seconds:6.2f} s  {mb / seconds:7.1f} MB/s  ({index.num_chunks} chunks)")
        d = CtfDeserializer(path, STREAMS, chunk_size_bytes=chunk)
        _, seconds = timed(lambda: [d.read_chunk(c) for c in range(d.num_chunks())])
        print(f"parse:  {seconds:6.2f} s  {mb / seconds:7.1f} MB/s  {args.lines * 794 / seconds / 1e6:6.1f} M values/s")
        for label, wrap in (("direct", lambda s: s), ("prefetch", PrefetchingSource)):
            source = wrap(MinibatchSource([CtfDeserializer(path, STREAMS, chunk_size_bytes=chunk)], seed=1))
            for what, compute in (("first sweep", 0), ("cached sweep", 0), (f"+{args.compute} matmuls/mb", args.compute)):
                samples, seconds = timed(lambda: sweep(source, args.minibatch, compute))
                print(f"{label:8s} {what:16s} {seconds:6.2f} s  {samples / seconds:9.0f} samples/s")
            source.close()


if __name__ == "__main__":
    main()
