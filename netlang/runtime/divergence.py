"""Noticing a training that diverges: the loss climbing far above where it started, and staying there.

The trainer shows the watch the criterion sums it reads anyway (every report, and what is left at
the end of an epoch): windows of minibatches, averaged per sample once they span at least `WINDOW`
minibatches. The first such window is the start. When the windows average more than `FACTOR` times
the start for `SUSTAINED` minibatches in a row, the watch says so once, with the epoch and the
learning rate in force: training on does not help, a lower learning rate usually does. (A loss that
becomes NaN or infinite stops the training; that is the trainer's error, not this warning.) The
state goes into checkpoints, so a resumed run watches on as if it had never stopped.
"""
from __future__ import annotations

WINDOW = 20        # minibatches at least per averaged window
FACTOR = 2.0       # "far above its start"
SUSTAINED = 60     # minibatches in a row


class DivergenceWatch:
    def __init__(self, criterion: str = "criterion"):
        self.criterion = criterion
        self.start: float | None = None
        self.above = 0
        self.warned = False
        self._sum = 0.0
        self._samples = 0
        self._minibatches = 0

    def observe(self, criterion_sum: float, samples: int, minibatches: int, epoch: int,
                learning_rate: float) -> str | None:
        """Take the sums of `minibatches` minibatches; the warning text when divergence is first seen."""
        self._sum += float(criterion_sum)
        self._samples += int(samples)
        self._minibatches += int(minibatches)
        if self._minibatches < WINDOW or self.warned:
            return None
        average, window = self._sum / max(self._samples, 1), self._minibatches
        self._sum, self._samples, self._minibatches = 0.0, 0, 0
        if self.start is None:
            self.start = average
            return None
        self.above = self.above + window if average > FACTOR * self.start and average > self.start else 0
        if self.above < SUSTAINED:
            return None
        self.warned = True
        return (f"the training is diverging: {self.criterion} averaged {average:.5g} per sample over the last "
                f"{window} minibatches, {average / self.start:.3g} times its start ({self.start:.5g}) and more "
                f"than {FACTOR:g} times it for {self.above} minibatches, in epoch {epoch} with learning rate "
                f"{learning_rate:.6g} per sample (try a lower learning rate)")

    def state(self) -> dict:
        return {"start": self.start, "above": self.above, "warned": self.warned, "sum": self._sum,
                "samples": self._samples, "minibatches": self._minibatches}

    def load_state(self, state: dict | None) -> None:
        """Continue from `state()`; a checkpoint without one (an older netlang) starts watching afresh."""
        if not isinstance(state, dict):
            return
        self.start, self.above, self.warned = state.get("start"), int(state.get("above", 0)), bool(state.get("warned"))
        self._sum, self._samples = float(state.get("sum", 0.0)), int(state.get("samples", 0))
        self._minibatches = int(state.get("minibatches", 0))
