"""Mixed precision: bf16 and fp16 matrix work over float32 master weights, and dynamic loss scaling.

`precision` (a top-level or action key) is the run's number format:

* `float` / `double`: everything in that type (as before);
* `bf16`: the operands of every matrix product and convolution are rounded to bfloat16 (8 exponent
  bits, 8 significand bits) and multiplied with float32 accumulation into a float32 result — what a
  GPU's bf16 tensor cores compute. Everything else stays float32: parameters (the master weights the
  learner updates), gradients, learner state, reductions, softmax and losses, and batch-norm
  statistics. bf16 has float32's range, so no loss scaling is needed;
* `fp16`: the same with IEEE half precision, whose range ends at 65504: the product's result is
  rounded to fp16 as well (a too-large value becomes inf, as on the GPU), so the loss is scaled up
  before backward to keep small gradients representable and the gradients are scaled back before
  the update (`LossScaler`: dynamic loss scaling);
* `allowTF32 = true`: float32 matrix products may run on TF32 tensor cores (10-bit significand inputs,
  float32 accumulation). It changes only GPU numbers; on the CPU it is a no-op.

The cast is one step in one place: `ComputePrecision.matmul`, which the backend's array module
(`ComputeModule`) puts behind `xp.matmul` for the kernels (Times, the recurrent cells, im2col
convolutions), so an op needs no precision logic of its own. On the CPU the rounding is emulated
exactly (round to nearest even on the bit pattern for bf16, NumPy's float16 for fp16), so mixed
precision runs and is tested without a GPU; on the GPU the same casts feed cuBLAS/cuDNN's 16-bit
inputs (runtime/gpu/gemm.py, runtime/gpu/cudnn.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REDUCED = ("bf16", "fp16")


def round_to_bf16(x, xp=np):
    """float32 `x` rounded to the nearest bfloat16 (ties to even), returned as float32. NaN stays NaN,
    values beyond bf16's largest finite value round to inf as the hardware's conversion does."""
    x = xp.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    rounded = ((bits + rounding) & np.uint32(0xFFFF0000)).view(np.float32)
    return xp.where(xp.isnan(x), x, rounded)


def round_to_fp16(x, xp=np):
    """float32 `x` rounded to IEEE half precision (overflow to inf), returned as float32."""
    # Overflow to inf is what fp16 does and what loss scaling watches for: not worth a warning.
    with np.errstate(over="ignore"):
        return xp.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


@dataclass(frozen=True)
class ComputePrecision:
    """How matrix products of a run are computed: `name` is float, double, bf16 or fp16."""

    name: str = "float"
    allow_tf32: bool = False

    @property
    def reduced(self) -> bool:
        return self.name in REDUCED

    def cast(self, x, xp=np):
        """An operand as the product sees it."""
        if self.name == "bf16":
            return round_to_bf16(x, xp)
        if self.name == "fp16":
            return round_to_fp16(x, xp)
        return x

    def matmul(self, a, b, xp=np, out=None):
        """a @ b with the operands cast (fp16: the result too), accumulated in float32."""
        product = xp.matmul(self.cast(a, xp), self.cast(b, xp))
        if self.name == "fp16":
            product = round_to_fp16(product, xp)
        if out is None:
            return product
        out[...] = product
        return out

    def describe(self) -> str:
        if self.name == "bf16":
            return "bf16 products, float32 master weights"
        if self.name == "fp16":
            return "fp16 products with dynamic loss scaling, float32 master weights"
        return self.name + (" (TF32 products)" if self.allow_tf32 else "")


class ComputeModule:
    """The array module as kernels see it: the backend's library (NumPy or CuPy), with `matmul`
    computed by the backend's matrix-product service (precision casts, a capturable cuBLAS call).
    Everything else is the library's own attribute."""

    def __init__(self, library, matmul):
        self._library = library
        self.matmul = matmul

    def __getattr__(self, name):
        return getattr(self._library, name)

    @property
    def library(self):
        return self._library

    def __repr__(self) -> str:
        return f"ComputeModule({self._library.__name__})"


class LossScaler:
    """Dynamic loss scaling for fp16 (the scheme of mixed-precision training as frameworks run it):

    * the loss gradient that starts backward is `scale` instead of 1, so every gradient is `scale`
      times too large and small ones stay above fp16's smallest values;
    * after backward the gradients are checked: if any is inf or NaN the step is skipped (no update,
      the learner's state untouched) and the scale is multiplied by `BACKOFF`; otherwise they are
      divided by `scale` and the update runs;
    * after `GROWTH_INTERVAL` good steps in a row the scale is multiplied by `GROWTH`.
    """

    INITIAL = 2.0 ** 16
    GROWTH = 2.0
    BACKOFF = 0.5
    GROWTH_INTERVAL = 2000
    SMALLEST = 1.0

    def __init__(self, initial: float = INITIAL, growth_interval: int = GROWTH_INTERVAL):
        self.scale = float(initial)
        self.growth_interval = int(growth_interval)
        self.good_steps = 0
        self.skipped = 0

    def update(self, finite: bool) -> bool:
        """After a step's backward: whether to apply the update, and the scale for the next step."""
        if not finite:
            self.scale = max(self.scale * self.BACKOFF, self.SMALLEST)
            self.good_steps = 0
            self.skipped += 1
            return False
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale *= self.GROWTH
            self.good_steps = 0
        return True

    def state(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped}

    def load_state(self, state: dict) -> None:
        self.scale = float(state.get("scale", self.INITIAL))
        self.good_steps = int(state.get("good_steps", 0))
        self.skipped = int(state.get("skipped", 0))


def all_finite(grad, xp=np) -> bool:
    """Whether every gradient value is finite (one device reduction, one host read)."""
    return bool(xp.isfinite(grad).all()) if grad.size else True
