"""Where the time of a training step goes: wall time per plan step, per node (`netlang time`).

The executor calls `begin()` and `end(step)` around every step of a run when it has a `StepTimer`
(`executor.step_timer`). Both wait for the device first, so on a GPU each step's time is its own
kernels' and not the queue's; that makes the step as a whole slower than in training, where the
device runs ahead, but the shares are what they are. A recurrent loop is one step (all its nodes,
all time steps), forward and backward.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class UnitTime:
    """The time one node (or one recurrent loop) took, summed over the timed runs."""

    unit: object              # the Node, or the Loop
    forward: float = 0.0      # seconds
    backward: float = 0.0

    @property
    def total(self) -> float:
        return self.forward + self.backward


class StepTimer:
    def __init__(self, backend):
        self.backend = backend
        self.units: dict[int, UnitTime] = {}
        self._started = 0.0

    def begin(self) -> None:
        self.backend.synchronize()
        self._started = time.perf_counter()

    def end(self, step) -> None:
        self.backend.synchronize()
        elapsed = time.perf_counter() - self._started
        unit = step.loop if step.loop is not None else step.node
        entry = self.units.setdefault(id(unit), UnitTime(unit))
        if step.kind in ("forward", "loop"):
            entry.forward += elapsed
        else:
            entry.backward += elapsed

    def ranked(self) -> list[UnitTime]:
        """Every unit timed, the most expensive first."""
        return sorted(self.units.values(), key=lambda u: u.total, reverse=True)
