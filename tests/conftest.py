"""Fixtures shared by the test modules.

`backend` runs a test once per array backend: NumPy always, CuPy when it imports and sees a CUDA
device (elsewhere that case is skipped, saying why). The op registry's generated checks and the
learner tests take it, so the same assertions hold on the CPU and on a GPU.
"""
from __future__ import annotations

import pytest

from netlang.runtime.backend import cpu_backend, gpu_available, select_backend

BACKENDS = ("numpy", "cupy")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """A backend of each kind, in double precision (tests give their arrays' dtypes themselves)."""
    if request.param == "cupy":
        if not gpu_available():
            pytest.skip("CuPy with a CUDA device is not available")
        return select_backend("auto", "double")
    return cpu_backend("double")
