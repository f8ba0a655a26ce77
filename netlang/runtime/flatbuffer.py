"""All learnable parameters of a network in one contiguous buffer.

Parameters, their gradients and every learner state (momentum, squared averages …) share one
layout: a 1-D array in which each parameter owns a contiguous segment. A parameter is used through
a view of its segment, shaped as the run-time (row-major) array, so the executor reads and writes
the buffer directly and the addresses never change. That gives

* one fused update: a learner runs a handful of vectorised operations over the whole buffer
  instead of a Python loop over parameters;
* one all-reduce: data-parallel training moves `grad` (or just its trainable part) in one call;
* stable addresses, which CUDA graphs need.

Frozen parameters (learning-rate multiplier 0, CNTK's constants-as-parameters) are laid out after
all trainable ones. Learners then work on the prefix `[:num_trainable]` only, so a frozen
parameter is never touched — no update, no momentum decay, no regularisation drift — at no cost.
`names` keeps the order in which the parameters were given; only the offsets differ.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from netlang.errors import NetworkError, suggest
from netlang.runtime.backend import Backend, cpu_backend


def _numel(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _as_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"parameter buffers are float32 or float64, not {dt}")
    return dt


class FlatParameters:
    """One buffer for parameter values, one for gradients, one for learning-rate multipliers.

    `shapes` maps parameter names to run-time (row-major) shapes, in network order. The buffers
    live on `backend` (default: NumPy), in `dtype` (default: the backend's).
    `lr_multipliers` / `reg_multipliers` map names to CNTK's per-parameter `learningRateMultiplier`
    and regularisation multiplier (missing names: 1.0). Multipliers are per parameter (one value
    per segment) but stored per element so a learner applies them in one multiplication.
    """

    def __init__(self, shapes: Mapping[str, tuple] | Iterable[tuple[str, tuple]], *,
                 backend: Backend | None = None, dtype=None, lr_multipliers: Mapping[str, float] | None = None,
                 reg_multipliers: Mapping[str, float] | None = None):
        items = list(shapes.items()) if isinstance(shapes, Mapping) else list(shapes)
        self.backend = backend or cpu_backend()
        self.xp = xp = self.backend.xp
        self.dtype = _as_dtype(self.backend.dtype if dtype is None else dtype)
        self.names: tuple[str, ...] = tuple(name for name, _ in items)
        if len(set(self.names)) != len(self.names):
            raise ValueError("parameter names must be unique")
        self._shapes = {name: tuple(int(d) for d in shape) for name, shape in items}
        for name, shape in self._shapes.items():
            if _numel(shape) == 0:
                raise NetworkError(f"parameter '{name}' has no elements (shape {shape})",
                                   hint="are all its dimensions inferred?")
        lr_of = _checked_multipliers(lr_multipliers, self.names, "learningRateMultiplier")
        reg_of = _checked_multipliers(reg_multipliers, self.names, "regularisation multiplier")

        # Trainable parameters first (in network order), then the frozen ones.
        trainable = [n for n in self.names if lr_of[n] != 0.0]
        frozen = [n for n in self.names if lr_of[n] == 0.0]
        self.trainable_names: tuple[str, ...] = tuple(trainable)
        self._offsets: dict[str, int] = {}
        offset = 0
        for name in trainable + frozen:
            self._offsets[name] = offset
            offset += _numel(self._shapes[name])
        self.size = offset
        self.num_trainable = sum(_numel(self._shapes[n]) for n in trainable)

        self.data = xp.zeros(self.size, dtype=self.dtype)
        self.grad = xp.zeros(self.size, dtype=self.dtype)
        self.lr_multiplier = self._per_element({n: lr_of[n] for n in self.names})
        # Learners multiply by a scalar instead of a vector when nothing needs the vector.
        self.uniform_lr = all(lr_of[n] == 1.0 for n in trainable)
        uniform_reg = all(reg_of[n] == 1.0 for n in trainable)
        self.reg_multiplier = None if uniform_reg else self._per_element(reg_of)

        # Segment bookkeeping of the trainable prefix, for per-parameter reductions
        # (CNTK computes clipping norms and AdaGrad/RmsProp multipliers per parameter matrix).
        sizes = [_numel(self._shapes[n]) for n in trainable]
        self.num_segments = len(sizes)
        starts = np.cumsum([0] + sizes[:-1]).astype(np.int64) if sizes else np.zeros(0, np.int64)
        self._segment_starts = self.backend.from_host(starts)
        self._segment_size_list = sizes                    # repeat counts (CuPy takes them as a list)
        self.segment_sizes = self.backend.from_host(np.asarray(sizes, dtype=self.dtype))

    # ---- layout -------------------------------------------------------------------------

    def shape(self, name: str) -> tuple:
        return self._shapes[self._known(name)]

    def offset(self, name: str) -> int:
        return self._offsets[self._known(name)]

    def segment(self, name: str) -> slice:
        start = self.offset(name)
        return slice(start, start + _numel(self._shapes[name]))

    @property
    def layout(self) -> tuple[str, ...]:
        """Parameter names in buffer order (trainable first): what a saved state buffer means."""
        return tuple(sorted(self.names, key=self._offsets.__getitem__))

    @property
    def trainable(self) -> slice:
        """The part of every buffer a learner updates."""
        return slice(0, self.num_trainable)

    def new_buffer(self):
        """A zero buffer with this layout (learner state: momentum, squared averages …)."""
        return self.xp.zeros(self.size, dtype=self.dtype)

    def view_of(self, buffer, name: str):
        """The segment of `name` in any buffer of this layout, shaped as the parameter."""
        return buffer[self.segment(name)].reshape(self._shapes[name])

    def view(self, name: str):
        return self.view_of(self.data, name)

    def grad_view(self, name: str):
        return self.view_of(self.grad, name)

    def zero_grad(self) -> None:
        self.grad.fill(0)

    # ---- per-parameter reductions over the trainable prefix ----------------------------------

    def segment_sum(self, values):
        """Sum of `values` (length num_trainable) within each trainable parameter."""
        return self.xp.add.reduceat(values, self._segment_starts)

    def segment_mean(self, values):
        return self.segment_sum(values) / self.segment_sizes

    def expand(self, per_segment):
        """Spread one value per trainable parameter over its elements."""
        return self.xp.repeat(per_segment, self._segment_size_list)

    # ---- moving values in and out ------------------------------------------------------

    def copy_from(self, values: Mapping[str, object], strict: bool = True) -> None:
        """Set parameter values from `name -> array` (numpy or cupy, any float dtype).

        With `strict`, every parameter must be given and no unknown name may appear.
        """
        unknown = [n for n in values if n not in self._offsets]
        missing = [n for n in self.names if n not in values]
        if strict and unknown:
            raise NetworkError(f"no parameter named '{unknown[0]}' in this network",
                               hint=_names_hint(unknown[0], self.names))
        if strict and missing:
            raise NetworkError(f"no value for parameter '{missing[0]}'"
                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        for name in self.names:
            if name not in values:
                continue
            value = values[name]
            shape = tuple(int(d) for d in getattr(value, "shape", ()))
            if shape != self._shapes[name]:
                raise NetworkError(f"parameter '{name}' has shape {shape} in the given values "
                                   f"but {self._shapes[name]} in the network")
            self.view(name)[...] = self.backend.from_host(value, self.dtype)

    def to_dict(self, host: bool = True) -> dict:
        """`name -> copy of the value`, as numpy arrays when `host` (for model files)."""
        out = {}
        for name in self.names:
            value = self.view(name).copy()
            out[name] = self.backend.to_host(value) if host else value
        return out

    # ---- helpers -------------------------------------------------------------------------

    def _known(self, name: str) -> str:
        if name not in self._shapes:
            raise KeyError(f"no parameter named '{name}'")
        return name

    def _per_element(self, multiplier_of: Mapping[str, float]):
        host = np.empty(self.size, dtype=self.dtype)
        for name in self.names:
            host[self.segment(name)] = multiplier_of[name]
        return self.backend.from_host(host)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (f"FlatParameters({len(self.names)} parameters, {self.size} elements, "
                f"{self.num_trainable} trainable, {self.dtype})")


def _checked_multipliers(given: Mapping[str, float] | None, names, what: str) -> dict:
    given = dict(given or {})
    for name in given:
        if name not in names:
            raise ValueError(f"{what} given for unknown parameter '{name}'")
    out = {}
    for name in names:
        value = float(given.get(name, 1.0))
        if not np.isfinite(value) or value < 0:
            raise NetworkError(f"parameter '{name}': {what} must be a finite number >= 0, "
                               f"not {value}")
        out[name] = value
    return out


def _names_hint(name: str, names) -> str | None:
    return suggest(name, names, case_insensitive=False)
