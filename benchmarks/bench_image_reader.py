"""Image reader throughput (images/s) through the full pipeline, on generated PNGs.

    python benchmarks/bench_image_reader.py                  # 32x32 and 224x224, 1 and 2 threads
    python benchmarks/bench_image_reader.py --small 4000 --large 400 --threads 1 2 4

For each image size, PNGs are written to a temporary directory (smooth random pictures with a little
noise, so they compress about like photos) with a map file and a mean file. Then, for each number of
decoding threads, a fresh deserializer runs CNTK's usual training chain and the figures are:

* `decode`: decoding only (no transforms), read_chunk over every chunk;
* `train chain`: decoding plus RandomSide crop, Scale (cubic:linear), Color, Mean, Transpose;
* `source sweep`: one randomized sweep of minibatches of 128 through MinibatchSource (the train chain,
  plus the shuffling, the per-minibatch `read_sequences` calls and the assembly into dense arrays).

32x32 images are scaled 32→32 after a 0.8–1.0 crop (CIFAR style); 224x224 images are cropped with
RandomArea 0.08–1.0 and scaled to 224 (ImageNet style).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image

from netlang.readers.image import ImageDeserializer
from netlang.readers.source import MinibatchSource
from netlang.readers.transforms import Color, Crop, Mean, Scale, Transpose, write_mean_file

MINIBATCH = 128


def generate(directory: str, count: int, size: int, seed: int = 0) -> str:
    """`count` PNGs of size×size in `directory`, and a map file; returns the map file's path."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        coarse = rng.integers(0, 256, (max(2, size // 8), max(2, size // 8), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
        pixels = np.clip(smooth + rng.integers(-6, 7, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(directory, f"img{i}.png"))
        lines.append(f"img{i}.png\t{i % 10}\n")
    map_path = os.path.join(directory, "map.txt")
    with open(map_path, "w") as fh:
        fh.writelines(lines)
    write_mean_file(os.path.join(directory, "mean.xml"), np.full((size, size, 3), 120, np.float32))
    return map_path


def train_chain(size: int, mean_path: str) -> list:
    from netlang.readers.transforms import read_mean_file

    crop = Crop("randomside", (0.8, 1.0), jitter="uniratio", hflip=True) if size <= 64 else \
        Crop("randomarea", area_ratio=(0.08, 1.0), aspect_ratio=(0.75, 1.0), jitter="uniratio", hflip=True)
    return [crop, Scale(size, size, 3, ("cubic", "linear")), Color(0.2, 0.2, 0.2),
            Mean(read_mean_file(mean_path), mean_path), Transpose()]


def images_per_second(deserializer: ImageDeserializer) -> float:
    start = time.perf_counter()
    for chunk in range(deserializer.num_chunks()):
        deserializer.read_chunk(chunk)
    return deserializer.num_sequences / (time.perf_counter() - start)


def source_sweep(deserializer: ImageDeserializer) -> float:
    source = MinibatchSource([deserializer], randomize=True, seed=1)
    start, samples = time.perf_counter(), 0
    while True:
        mb = source.next_minibatch(MINIBATCH)
        mb["features"].to_dense_batch()
        mb["labels"].to_dense_batch()
        samples += mb.num_samples
        if mb.end_of_epoch:
            return samples / (time.perf_counter() - start)


def run(size: int, count: int, threads: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        map_path = generate(tmp, count, size)
        png_kb = sum(os.path.getsize(os.path.join(tmp, f"img{i}.png")) for i in range(count)) / count / 1024
        print(f"{size}x{size}: {count} PNGs of {png_kb:.1f} KB on average, generated in "
              f"{time.perf_counter() - start:.1f} s")
        chain = train_chain(size, os.path.join(tmp, "mean.xml"))
        for n in threads:
            decode = images_per_second(ImageDeserializer(map_path, [], 10, num_threads=n))
            train = images_per_second(ImageDeserializer(map_path, chain, 10, num_threads=n))
            sweep = source_sweep(ImageDeserializer(map_path, chain, 10, num_threads=n))
            print(f"  {n} thread(s): decode {decode:8.0f} images/s | train chain {train:8.0f} images/s | "
                  f"source sweep {sweep:8.0f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=3000, help="number of 32x32 images")
    parser.add_argument("--large", type=int, default=300, help="number of 224x224 images")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"CPU cores: {os.cpu_count()}")
    run(32, args.small, args.threads)
    run(224, args.large, args.threads)


if __name__ == "__main__":
    main()
