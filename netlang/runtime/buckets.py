"""Input-shape buckets: which minibatches share one captured CUDA graph.

A captured graph replays fixed shapes, so minibatches are grouped by shape. The policy:

* **Sequence inputs** (`(array, mask)` feeds, `(T, N, …)`) are padded up to a bucket: the number of
  steps T and the number of sequences N each to the next size of `LADDER` (8, 16, 24, 32, 48, 64,
  96, 128, …: steps of at most 1.5×, so padding adds at most half). Padded steps and sequences are
  masked out (mask False, values 0), which every op already honours — a reader's minibatch is padded
  to its longest sequence in the same way — so the numbers do not change, only the order of some
  sums over more zeros. Recurrent loops run over the bucket's T steps and are captured per bucket.
* **Batch inputs** (images, frames: plain arrays) are not padded: a padded sample would enter the
  criterion, the metrics and batch-norm statistics. Their bucket is their exact shape (every full
  minibatch has one shape; an epoch's last, partial minibatch has its own).
* A bucket is captured the third time it is seen (first: plain eager step; second: the warm-up on
  the bucket's static buffers, which compiles kernels and builds cuDNN plans; third: capture and
  replay), so a shape seen once or twice never pays for a capture; at most `MAX_GRAPHS` buckets per
  step kind are captured, later ones run eagerly.
* Run-time options that kernels bake into launches (the dropout rate of the epoch, fp16's loss
  scale) are part of the key: a change is a new bucket, never a stale graph.
"""
from __future__ import annotations

import numpy as np

from netlang.ops.sparse import SparseRows

MAX_GRAPHS = 16


def _ladder(limit: int = 1 << 20) -> list[int]:
    sizes, size = [8, 16, 24], 32
    while size <= limit:
        sizes += [size, size * 3 // 2]
        size *= 2
    return sizes


LADDER = _ladder()


def bucket_size(n: int) -> int:
    """The smallest ladder size >= n."""
    index = int(np.searchsorted(LADDER, n))
    return LADDER[index] if index < len(LADDER) else int(n)


def _split(feed):
    if isinstance(feed, tuple) and len(feed) == 2:
        return feed
    return feed, None


def bucketable(feeds: dict) -> str | None:
    """None when the feeds can be bucketed, else why not (one line)."""
    for name, feed in feeds.items():
        value, mask = _split(feed)
        if isinstance(value, SparseRows):
            return f"sparse input '{name}' changes its number of non-zeros every minibatch"
        if not isinstance(value, np.ndarray):
            return f"input '{name}' is not host data"
        if mask is not None and value.ndim < 2:
            return f"input '{name}' has a mask but no (steps, sequences) axes"
    return None


def bucket_of(feeds: dict, options: dict) -> tuple:
    """The bucket key of a minibatch's feeds (see the module doc)."""
    parts = []
    for name in sorted(feeds):
        value, mask = _split(feeds[name])
        shape = tuple(value.shape)
        if mask is not None:
            shape = (bucket_size(shape[0]), bucket_size(shape[1])) + shape[2:]
        parts.append((name, shape, str(value.dtype), mask is not None))
    baked = tuple(sorted((k, v) for k, v in options.items() if isinstance(v, (int, float, bool, str))))
    return tuple(parts), baked


def padded(feeds: dict, key: tuple) -> dict:
    """The feeds padded to bucket `key`'s shapes: sequence values with zeros, masks with False."""
    out = {}
    for name, shape, _, masked in key[0]:
        value, mask = _split(feeds[name])
        if not masked:
            out[name] = value
            continue
        grown = np.zeros(shape, dtype=value.dtype)
        grown[tuple(slice(0, d) for d in value.shape)] = value
        grown_mask = np.zeros(shape[:2], dtype=bool)
        grown_mask[:mask.shape[0], :mask.shape[1]] = np.asarray(mask, dtype=bool)
        out[name] = (grown, grown_mask)
    return out
