"""Backend selection: the array module (numpy or cupy) and the element type.

`deviceId = -1` (or `cpu`) is NumPy; a GPU index or `auto` selects CuPy when it is importable and
a device is present (`auto` falls back to the CPU, an explicit GPU index is an error without one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from netlang.errors import ConfigError

DTYPES = {"float": np.float32, "float32": np.float32, "double": np.float64, "float64": np.float64}


@dataclass(frozen=True)
class Backend:
    xp: Any
    dtype: Any
    device: str

    def asarray(self, array):
        return self.xp.asarray(array, dtype=self.dtype)

    def to_numpy(self, array):
        if self.xp is np:
            return np.asarray(array)
        return self.xp.asnumpy(array)


def _gpu_module():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # noqa: BLE001 - any import/driver failure means "no GPU"
        return None
    return None


def select_backend(device_id="cpu", precision: str = "float") -> Backend:
    dtype = DTYPES.get(str(precision).lower())
    if dtype is None:
        raise ConfigError(f"unknown precision '{precision}'", hint="use 'float' or 'double'")
    dev = str(device_id).lower()
    if dev in ("-1", "cpu", "-1.0"):
        return Backend(np, dtype, "cpu")
    cupy = _gpu_module()
    if dev == "auto":
        return Backend(cupy, dtype, "gpu:0") if cupy is not None else Backend(np, dtype, "cpu")
    if cupy is None:
        raise ConfigError(f"deviceId = {device_id} asks for a GPU, but CuPy or a CUDA device is not available",
                          hint="use deviceId = -1 (CPU) or 'auto', or install netlang[gpu] on a machine with a GPU")
    cupy.cuda.Device(int(float(dev))).use()
    return Backend(cupy, dtype, f"gpu:{int(float(dev))}")
