"""A small synthetic classification set, so a first training run needs no download.

Gaussian blobs: each of `classes` classes has a centre drawn uniformly from a cube; a sample is its
class centre plus isotropic Gaussian noise. With the default spread, neighbouring classes overlap a
little, so a linear model gets most but not all samples right and a hidden layer does better.
Everything is drawn from one generator seeded by `seed`: the same arguments give the same bytes.

Written as CTF (`|features x1 … xD |labels 0 1 0`), the format the CNTKTextFormat reader takes.
"""
from __future__ import annotations

import os

import numpy as np

from netlang.errors import UsageError

TRAIN_FILE = "Train_cntk_text.txt"
TEST_FILE = "Test_cntk_text.txt"
CENTRE_RANGE = 2.5     # centres are uniform in [-2.5, 2.5]^dim
DEFAULT_SPREAD = 1.0   # standard deviation of the noise around a centre


def make_blobs(num_samples: int, *, dim: int, classes: int, seed: int,
               spread: float = DEFAULT_SPREAD, rng: np.random.Generator | None = None,
               centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features `(N, dim)`, integer labels `(N,)` and the class centres `(classes, dim)`."""
    rng = rng or np.random.default_rng(seed)
    if centres is None:
        centres = rng.uniform(-CENTRE_RANGE, CENTRE_RANGE, size=(classes, dim))
    labels = rng.integers(0, classes, size=num_samples)
    features = centres[labels] + rng.normal(0.0, spread, size=(num_samples, dim))
    return features, labels, centres


def ctf_text(features: np.ndarray, labels: np.ndarray, classes: int) -> str:
    one_hot = [" ".join("1" if k == c else "0" for k in range(classes)) for c in range(classes)]
    rows = (" ".join(f"{v:.5f}" for v in row) for row in features)
    return "".join(f"|features {x} |labels {one_hot[y]}\n" for x, y in zip(rows, labels))


def prepare_synthetic(out_dir: str, *, seed: int = 0, classes: int = 3, dim: int = 2,
                      samples: int = 2000, test_samples: int | None = None,
                      spread: float = DEFAULT_SPREAD) -> dict[str, int]:
    """Write `Train_cntk_text.txt` (`samples` lines) and `Test_cntk_text.txt` into `out_dir`."""
    _check("--classes", classes, 2, 1000)
    _check("--dim", dim, 1, 4096)
    _check("--samples", samples, classes, 10_000_000)
    if seed < 0:
        raise UsageError(f"--seed must be ≥ 0, not {seed}")
    test_samples = max(classes, samples // 4) if test_samples is None else test_samples
    rng = np.random.default_rng(seed)
    train_x, train_y, centres = make_blobs(samples, dim=dim, classes=classes, seed=seed, spread=spread, rng=rng)
    test_x, test_y, _ = make_blobs(test_samples, dim=dim, classes=classes, seed=seed, spread=spread,
                                   rng=rng, centres=centres)
    os.makedirs(out_dir, exist_ok=True)
    for name, x, y in ((TRAIN_FILE, train_x, train_y), (TEST_FILE, test_x, test_y)):
        tmp = os.path.join(out_dir, name + ".tmp")
        with open(tmp, "w", encoding="ascii", newline="\n") as fh:
            fh.write(ctf_text(x, y, classes))
        os.replace(tmp, os.path.join(out_dir, name))
    return {TRAIN_FILE: samples, TEST_FILE: test_samples}


def _check(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UsageError(f"{flag} must be between {low} and {high}, not {value}")
