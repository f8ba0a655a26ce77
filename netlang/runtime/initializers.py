"""Initial values of parameters (reference §4.1 `init` kinds), drawn once all dimensions are known.

Fan-in/fan-out follow CNTK: the first `initOutputRank` BrainScript axes are fan-out axes (a negative
rank counts from the end, as convolution kernels use), the rest fan-in; the first
`initFilterRank` axes are the receptive field, which counts towards both.
Returned arrays are in run-time layout (row-major, axes reversed).
"""
from __future__ import annotations

import math

import numpy as np

from netlang.errors import ConfigError
from netlang.ir.shapes import num_elements, to_runtime


def fans(shape: tuple, output_rank: int, filter_rank: int) -> tuple[int, int]:
    shape = tuple(shape)
    if output_rank < 0:
        out_axes = list(range(len(shape) + output_rank, len(shape)))
    else:
        out_axes = list(range(min(output_rank, len(shape))))
    receptive = num_elements(shape[:filter_rank]) if filter_rank > 0 else 1
    fan_out = num_elements([shape[i] for i in out_axes]) * receptive
    fan_in = num_elements([d for i, d in enumerate(shape) if i not in out_axes])
    return max(fan_in, 1), max(fan_out, 1)


def initial_value(recipe: dict, rng: np.random.Generator, span=None) -> np.ndarray:
    """Float64 array in run-time layout for a LearnableParameter's recipe (its attrs)."""
    shape = tuple(recipe["shape"])
    kind = recipe.get("init", "uniform")
    scale = float(recipe.get("initValueScale", 1.0))
    fan_in, fan_out = fans(shape, int(recipe.get("initOutputRank", 1)), int(recipe.get("initFilterRank", 0)))
    rm = to_runtime(shape)
    if kind == "uniform":
        return rng.uniform(-0.05 * scale, 0.05 * scale, rm)
    if kind == "gaussian":
        return rng.normal(0.0, 0.2 * scale / math.sqrt(fan_in), rm)
    if kind == "normal":                   # CNTK: initValueScale is the standard deviation
        return rng.normal(0.0, scale, rm)
    if kind == "truncNormal":              # ... redrawn beyond two standard deviations
        return _truncated_normal(rng, scale, rm)
    if kind == "xavier":
        r = scale * math.sqrt(3.0 / fan_in)
        return rng.uniform(-r, r, rm)
    if kind == "glorotUniform":
        r = scale * math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-r, r, rm)
    if kind == "glorotNormal":
        return rng.normal(0.0, scale * math.sqrt(2.0 / (fan_in + fan_out)), rm)
    if kind == "heUniform":
        r = scale * math.sqrt(6.0 / fan_in)
        return rng.uniform(-r, r, rm)
    if kind == "heNormal":
        return rng.normal(0.0, scale * math.sqrt(2.0 / fan_in), rm)
    if kind == "zero":
        return np.zeros(rm)
    if kind == "fixedValue":
        return np.full(rm, float(recipe.get("initValue", 0) or 0))
    if kind == "fromLiteral":
        return _matrix_as(recipe["literal"], shape, span)
    if kind == "fromFile":
        path = recipe.get("initFromFilePath", "")
        try:
            matrix = np.loadtxt(path, ndmin=2)
        except OSError as exc:
            raise ConfigError(f"cannot read initFromFilePath '{path}': {exc.strerror}", span) from None
        return _matrix_as(matrix, shape, span)
    if kind == "bilinear":
        return _bilinear(shape)
    raise ConfigError(f"unknown init '{kind}'", span)


def _truncated_normal(rng: np.random.Generator, stddev: float, shape: tuple) -> np.ndarray:
    values = rng.normal(0.0, stddev, shape)
    outside = np.abs(values) > 2 * stddev
    while outside.any():
        values[outside] = rng.normal(0.0, stddev, int(outside.sum()))
        outside = np.abs(values) > 2 * stddev
    return values


def _matrix_as(matrix: np.ndarray, shape: tuple, span) -> np.ndarray:
    # A text matrix lists rows = first BS axis; BS (rows:cols) is column-major, i.e. the row-major
    # run-time array is the transpose of the text's row/column layout.
    if matrix.size != num_elements(shape):
        raise ConfigError(f"initial value has {matrix.size} elements, parameter shape needs {num_elements(shape)}", span)
    return np.asarray(matrix, dtype=np.float64).T.reshape(to_runtime(shape))


def _bilinear(shape: tuple) -> np.ndarray:
    """Bilinear upsampling kernel for a (kW, kH, C, C) transposed-convolution weight."""
    kw, kh = shape[0], shape[1]
    channels = shape[2] if len(shape) > 2 else 1

    def profile(k):
        factor = (k + 1) // 2
        center = factor - 1 if k % 2 == 1 else factor - 0.5
        return 1 - np.abs(np.arange(k) - center) / factor

    kernel = np.outer(profile(kh), profile(kw))  # (kH, kW)
    out = np.zeros(to_runtime(shape))
    for c in range(channels):
        if out.ndim == 4:
            out[c, c] = kernel
        else:
            out[c] = kernel
    return out


class SeedSequence:
    """Deterministic per-parameter seeds: `randomSeed=-1` takes the next value of a counter."""

    def __init__(self, base_seed: int = 1):
        self.base = int(base_seed)
        self.counter = 0

    def rng_for(self, recipe: dict) -> np.random.Generator:
        seed = int(recipe.get("randomSeed", -1))
        if seed < 0:
            seed = self.counter
            self.counter += 1
        return np.random.default_rng([self.base, seed])
