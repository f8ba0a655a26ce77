"""MNIST (and Fashion-MNIST, same layout) from IDX files into the formats netlang's readers take.

Written exactly as CNTK's MNIST examples read them:

* `Train-28x28_cntk_text.txt`, `Test-28x28_cntk_text.txt`: one line per image,
  `|labels 0 0 1 0 0 0 0 0 0 0 |features 0 0 … 255` (one-hot label first, then the 784 pixel values
  0–255 in row-major order);
* optionally PNG files `train/00000.png …`, `test/…` with `train_map.txt`/`test_map.txt` holding
  `path<TAB>label` (paths relative to the map file's directory) for the image reader.

The text is produced in bulk with NumPy: a 256-entry table lays every pixel out as four bytes
(hundreds, tens, ones, separator) with a filler byte for leading zeros, and one boolean mask removes
the fillers from a whole block of images at once.
"""
from __future__ import annotations

import os

import numpy as np

from netlang.datasets.idx import read_idx
from netlang.errors import DataError, DataPosition

NUM_CLASSES = 10
SPLITS = (("train", "Train-28x28_cntk_text.txt", "train_map.txt"),
          ("t10k", "Test-28x28_cntk_text.txt", "test_map.txt"))
_BLOCK = 8192     # images formatted at once (about 26 MB of text)
_FILLER = 0       # never occurs in the text, removed before writing


def find_idx(source_dir: str, stem: str) -> str:
    """The IDX file for `stem` (e.g. `train-images-idx3-ubyte`), gzipped or not, in `source_dir`."""
    dotted = stem.replace("-idx", ".idx")       # some mirrors name them train-images.idx3-ubyte
    for name in (stem + ".gz", stem, dotted + ".gz", dotted):
        path = os.path.join(source_dir, name)
        if os.path.isfile(path):
            return path
    raise DataError(f"{stem}(.gz) not found", DataPosition(source_dir),
                    hint="--source must be the directory with the four IDX files of the dataset")


def load_split(source_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 28, 28)` uint8 and labels `(N,)` of split `train` or `t10k`."""
    images_path = find_idx(source_dir, f"{split}-images-idx3-ubyte")
    labels_path = find_idx(source_dir, f"{split}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"expected uint8 images of shape (N, rows, cols), found {images.dtype} {images.shape}",
                        DataPosition(images_path))
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"expected {len(images)} labels, found shape {labels.shape}", DataPosition(labels_path))
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"label {int(labels.max())} is not a digit class 0–9", DataPosition(labels_path))
    return images, labels.astype(np.int64)


def ctf_lines(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The CTF text of a block of images: `|labels <one-hot> |features <pixels>` per line."""
    n = len(images)
    # One 4-byte word per pixel value, so laying out the text is a single 1-D gather.
    slots = _PIXEL_WORDS[images.reshape(n, -1)].view(np.uint8).reshape(n, -1, 4)
    slots[:, -1, 3] = ord("\n")
    text = np.concatenate([_PREFIXES[labels], slots.reshape(n, -1)], axis=1)
    return text.tobytes().translate(None, bytes([_FILLER]))


def _pixel_slots() -> np.ndarray:
    """For each byte value, its four text slots: hundreds, tens, ones, space (leading zeros = filler)."""
    values = np.arange(256)
    slots = np.full((256, 4), _FILLER, dtype=np.uint8)
    slots[:, 0] = np.where(values >= 100, 48 + values // 100, _FILLER)
    slots[:, 1] = np.where(values >= 10, 48 + (values // 10) % 10, _FILLER)
    slots[:, 2] = 48 + values % 10
    slots[:, 3] = ord(" ")
    return slots


_PIXEL_WORDS = np.ascontiguousarray(_pixel_slots()).view(np.uint32).ravel()


def _prefix(label: int) -> bytes:
    one_hot = " ".join("1" if k == label else "0" for k in range(NUM_CLASSES))
    return f"|labels {one_hot} |features ".encode()


_PREFIXES = np.array([list(_prefix(k)) for k in range(NUM_CLASSES)], dtype=np.uint8)


def write_ctf(path: str, images: np.ndarray, labels: np.ndarray) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        for start in range(0, len(images), _BLOCK):
            fh.write(ctf_lines(images[start:start + _BLOCK], labels[start:start + _BLOCK]))
    os.replace(tmp, path)


def write_pngs(out_dir: str, folder: str, map_name: str, images: np.ndarray, labels: np.ndarray) -> None:
    """PNG files `<folder>/<i>.png` and a map file `path<TAB>label` for the image reader."""
    from PIL import Image

    os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    width = max(5, len(str(len(images) - 1)))
    lines = []
    for i, (image, label) in enumerate(zip(images, labels)):
        rel = f"{folder}/{i:0{width}d}.png"
        Image.fromarray(image, mode="L").save(os.path.join(out_dir, rel), compress_level=1)
        lines.append(f"{rel}\t{int(label)}\n")
    tmp = os.path.join(out_dir, map_name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(lines)
    os.replace(tmp, os.path.join(out_dir, map_name))


def prepare_mnist(source_dir: str, out_dir: str, *, pngs: bool = True) -> dict[str, int]:
    """Write the CTF files (and PNGs + map files) for MNIST-layout IDX files; returns images per file."""
    for split, _, _ in SPLITS:      # all four files must be there before anything is written
        find_idx(source_dir, f"{split}-images-idx3-ubyte")
        find_idx(source_dir, f"{split}-labels-idx1-ubyte")
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for split, ctf_name, map_name in SPLITS:
        images, labels = load_split(source_dir, split)
        write_ctf(os.path.join(out_dir, ctf_name), images, labels)
        if pngs:
            write_pngs(out_dir, "train" if split == "train" else "test", map_name, images, labels)
        counts[ctf_name] = len(images)
    return counts
