"""The one place where BrainScript shape notation meets run-time array layout.

BrainScript writes shapes first-axis-fastest (`W:H:C`, a matrix `(out:in)`); run-time arrays are
row-major with the sample axes reversed and the dynamic axes in front (`[N, C, H, W]`,
`[T, N, D]`). Everything that converts between the two calls these functions.
"""
from __future__ import annotations

Shape = tuple


def to_runtime(shape: Shape) -> tuple:
    """Row-major array shape of one sample with BrainScript shape `shape`."""
    return tuple(reversed(tuple(shape)))


def to_bs(rm_shape: tuple) -> Shape:
    """BrainScript shape of a row-major sample array shape."""
    return tuple(reversed(tuple(rm_shape)))


def rm_axis(bs_axis: int, ndim: int) -> int:
    """Array axis of the 1-based BrainScript sample axis `bs_axis` in an array of `ndim` axes.

    The sample axes are the trailing ones, reversed, so BS axis 1 is the last array axis whatever
    the number of leading dynamic axes.
    """
    return ndim - bs_axis


def num_elements(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def format_shape(shape: Shape, dyn: str = "") -> str:
    """CNTK's printing: `[784]`, `[28 x 28 x 1]`, plus ` x *` for sequences or ` x #` for batches."""
    dims = " x ".join("?" if d == 0 else str(int(d)) for d in shape) if len(shape) else "1"
    return f"[{dims}{dyn}]"


def broadcast_shapes(a: Shape, b: Shape) -> Shape:
    """BrainScript elementwise broadcasting: left-aligned, missing trailing dims are 1, 1 stretches.

    0 (not yet inferred) adopts the other operand's dimension. Raises ValueError when incompatible.
    """
    n = max(len(a), len(b))
    a = tuple(a) + (1,) * (n - len(a))
    b = tuple(b) + (1,) * (n - len(b))
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif x == 0:
            out.append(y)
        elif y == 0:
            out.append(x)
        else:
            raise ValueError(f"dimensions {x} and {y} differ")
    return tuple(out)
