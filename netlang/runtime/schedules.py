"""CNTK's training schedules in the units the learner works in: learning rate and momentum per
sample for each epoch, from the SGD block's keys.

The schema reads every schedule key into a `Schedule` (compiler/lang/schedule.py: CNTK's
`value*epochs:…:last`, 1-based epochs, the last value repeating), checks its values' ranges and
fills in the defaults (`minibatchSize = 256`, `momentumPerMB = 0.9` when no momentum key is given);
`SGDSettings` carries them here. This module keeps CNTK's meaning of the values:

* learning rates are given per sample (`learningRatesPerSample`) or per minibatch
  (`learningRatesPerMB`); a per-minibatch rate is divided by that epoch's `minibatchSize`, so the
  learners only ever see a rate per sample (gradients are sums over the minibatch's samples);
* momentum is given per minibatch (`momentumPerMB`, for the epoch's `minibatchSize`), per sample
  (`momentumPerSample`) or as a time constant in samples (`momentumAsTimeConstant`, τ ↦ per-sample
  momentum exp(-1/τ), τ = 0 ↦ 0). Internally it is a per-sample value μ_s; an update on a minibatch
  of N samples uses μ_s^N, so a short last minibatch gets proportionally less momentum.

The schedules take a `Schedule` (or a number, a constant schedule: handy in tests and the API).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from netlang.compiler.lang.schedule import Schedule
from netlang.compiler.lang.settings import SGDSettings


class MinibatchSizeSchedule:
    """`minibatchSize` per epoch, in samples."""

    def __init__(self, schedule: Schedule | int):
        self.schedule = Schedule.of(schedule)

    def __call__(self, epoch: int) -> int:
        return int(self.schedule.value(epoch))


def _minibatch_sizes(minibatch_size) -> MinibatchSizeSchedule | None:
    if minibatch_size is None or isinstance(minibatch_size, MinibatchSizeSchedule):
        return minibatch_size
    return MinibatchSizeSchedule(minibatch_size)


def _one_of(**given):
    """The one (key, value) that is not None."""
    present = [(key, value) for key, value in given.items() if value is not None]
    if len(present) != 1:
        raise ValueError(f"give exactly one of {', '.join(given)} (the schema makes sure a config does)")
    return present[0]


class LearningRateSchedule:
    """The learning rate per sample for each epoch, from `per_sample` (`learningRatesPerSample`) or
    `per_minibatch` (`learningRatesPerMB`, divided by that epoch's minibatch size)."""

    def __init__(self, *, per_sample=None, per_minibatch=None, minibatch_size=None):
        self.minibatch_size = _minibatch_sizes(minibatch_size)
        unit, given = _one_of(sample=per_sample, minibatch=per_minibatch)
        if unit == "minibatch" and self.minibatch_size is None:
            raise ValueError("a learning rate per minibatch needs the minibatch size")
        self.unit = unit
        self.schedule = Schedule.of(given)

    @classmethod
    def of(cls, sgd: SGDSettings) -> "LearningRateSchedule":
        return cls(per_sample=sgd.learning_rates_per_sample, per_minibatch=sgd.learning_rates_per_mb,
                   minibatch_size=sgd.minibatch_size)

    def per_sample(self, epoch: int) -> float:
        value = float(self.schedule.value(epoch))
        return value if self.unit == "sample" else value / self.minibatch_size(epoch)

    def per_minibatch(self, epoch: int) -> float:
        """The rate for a whole minibatch of the epoch's nominal size (for display)."""
        if self.unit == "minibatch":
            return float(self.schedule.value(epoch))
        return self.per_sample(epoch) * self.minibatch_size(epoch)


class MomentumSchedule:
    """Unit-gain momentum for each epoch, kept as a per-sample value, from one of `per_minibatch`
    (`momentumPerMB`), `per_sample` (`momentumPerSample`) or `time_constant`
    (`momentumAsTimeConstant`, in samples)."""

    def __init__(self, *, per_minibatch=None, per_sample=None, time_constant=None, minibatch_size=None):
        self.minibatch_size = _minibatch_sizes(minibatch_size)
        unit, given = _one_of(minibatch=per_minibatch, sample=per_sample, time_constant=time_constant)
        if unit == "minibatch" and self.minibatch_size is None:
            raise ValueError("a momentum per minibatch needs the minibatch size")
        self.unit = unit
        self.schedule = Schedule.of(given)

    @classmethod
    def of(cls, sgd: SGDSettings) -> "MomentumSchedule":
        return cls(per_minibatch=sgd.momentum_per_mb, per_sample=sgd.momentum_per_sample,
                   time_constant=sgd.momentum_as_time_constant, minibatch_size=sgd.minibatch_size)

    def per_sample(self, epoch: int) -> float:
        value = float(self.schedule.value(epoch))
        if self.unit == "time_constant":
            return 0.0 if value == 0 else math.exp(-1.0 / value)
        if self.unit == "sample":
            return value
        return value ** (1.0 / self.minibatch_size(epoch))

    def per_minibatch(self, epoch: int, mb_size: int) -> float:
        """The momentum of one update on a minibatch of `mb_size` samples: μ_s^mb_size."""
        if self.unit == "minibatch" and mb_size == self.minibatch_size(epoch):
            return float(self.schedule.value(epoch))    # exactly the value the user wrote
        return self.per_sample(epoch) ** mb_size

    def time_constant(self, epoch: int) -> float:
        """τ = -1/ln(μ_s) in samples (0 for no momentum)."""
        mu = self.per_sample(epoch)
        return 0.0 if mu == 0 else -1.0 / math.log(mu)


# ---- explain ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class EpochValues:
    """The effective values of one epoch, in every unit a user may think in."""

    epoch: int
    minibatch_size: int
    lr_per_sample: float
    lr_per_minibatch: float
    momentum_per_sample: float | None = None
    momentum_per_minibatch: float | None = None
    momentum_time_constant: float | None = None


def effective_values(epochs: int, learning_rate: LearningRateSchedule,
                     momentum: MomentumSchedule | None = None) -> list[EpochValues]:
    rows = []
    for epoch in range(1, epochs + 1):
        mb = learning_rate.minibatch_size(epoch)
        row = dict(epoch=epoch, minibatch_size=mb, lr_per_sample=learning_rate.per_sample(epoch),
                   lr_per_minibatch=learning_rate.per_sample(epoch) * mb)
        if momentum is not None:
            row.update(momentum_per_sample=momentum.per_sample(epoch),
                       momentum_per_minibatch=momentum.per_minibatch(epoch, mb),
                       momentum_time_constant=momentum.time_constant(epoch))
        rows.append(EpochValues(**row))
    return rows


def describe(epochs: int, learning_rate: LearningRateSchedule,
             momentum: MomentumSchedule | None = None) -> list[str]:
    """One line per run of epochs with equal values, e.g. for `netlang explain`:

    `epochs 1-2: minibatchSize 256; learning rate 3.90625e-05 per sample (0.01 per minibatch);
    momentum 0.9 per minibatch (0.999589 per sample, time constant 2429.8 samples)`
    """
    rows = effective_values(epochs, learning_rate, momentum)
    lines = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i < len(rows) and _same_values(rows[i], rows[start]):
            continue
        first, last = rows[start].epoch, rows[i - 1].epoch
        label = f"epoch {first}" if first == last else f"epochs {first}-{last}"
        lines.append(f"{label}: {_format_row(rows[start])}")
        start = i
    return lines


def _same_values(a: EpochValues, b: EpochValues) -> bool:
    return (a.minibatch_size, a.lr_per_sample, a.momentum_per_sample) == \
        (b.minibatch_size, b.lr_per_sample, b.momentum_per_sample)


def _format_row(row: EpochValues) -> str:
    text = (f"minibatchSize {row.minibatch_size}; learning rate {row.lr_per_sample:.6g} per sample "
            f"({row.lr_per_minibatch:.6g} per minibatch)")
    if row.momentum_per_sample is not None:
        text += (f"; momentum {row.momentum_per_minibatch:.6g} per minibatch "
                 f"({row.momentum_per_sample:.6g} per sample, time constant "
                 f"{row.momentum_time_constant:.6g} samples)")
    return text
