"""CNTK's training schedules: learning rate, momentum and minibatch size per epoch.

A schedule is CNTK's `value*epochs:value*epochs:…:last` list: each value holds for the given
number of epochs, the last value repeats for ever. Epochs are 1-based, as users count them.
This module keeps CNTK's meaning of the values, independent of how the config layer reads them:

* learning rates are given per sample (`learningRatesPerSample`) or per minibatch
  (`learningRatesPerMB`); a per-minibatch rate is divided by that epoch's `minibatchSize`, so the
  learners only ever see a rate per sample (gradients are sums over the minibatch's samples);
* momentum is given per minibatch (`momentumPerMB`, for the epoch's `minibatchSize`), per sample
  (`momentumPerSample`) or as a time constant in samples (`momentumAsTimeConstant`, τ ↦ per-sample
  momentum exp(-1/τ), τ = 0 ↦ 0). Internally it is a per-sample value μ_s; an update on a minibatch
  of N samples uses μ_s^N, so a short last minibatch gets proportionally less momentum.
  Without any momentum key CNTK uses `momentumPerMB = 0.9`. Values must lie in [0, 1).

A schedule can be a `Schedule` made here, a list of `(value, epochs)` pairs, a plain number, or any
object with a `.value(epoch)` method (the config layer's schedule view); `as_schedule` accepts all.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from netlang.errors import SchemaError, Span

DEFAULT_MINIBATCH_SIZE = 256        # SGD block default
DEFAULT_MOMENTUM_PER_MB = 0.9       # used when no momentum key is given


class Schedule:
    """Values per 1-based epoch from `[(value, num_epochs), …, (last_value, None)]`.

    The last entry's count is ignored: its value repeats for all later epochs.
    """

    def __init__(self, entries: Sequence[tuple[Any, int | None]], *, span: Span | None = None,
                 key: str | None = None):
        self.span = span
        self.key = key
        self.entries: tuple[tuple[Any, int | None], ...] = tuple(
            (value, count) for value, count in entries)
        if not self.entries:
            raise SchemaError("a schedule needs at least one value", span, key=key)
        for value, count in self.entries[:-1]:
            if count is None or int(count) != count or count < 1:
                raise SchemaError(f"schedule entry '{value}*{count}': the number of epochs must be "
                                  "a whole number >= 1", span, key=key)
        # Cumulative last epoch of each entry, for value().
        self._ends: list[int] = []
        end = 0
        for _, count in self.entries[:-1]:
            end += int(count)
            self._ends.append(end)

    @classmethod
    def constant(cls, value, *, span: Span | None = None, key: str | None = None) -> "Schedule":
        return cls([(value, None)], span=span, key=key)

    @classmethod
    def parse(cls, text: str, *, span: Span | None = None, key: str | None = None,
              kind=float) -> "Schedule":
        """Read CNTK's text form `0.01*2:0.005` (value*epochs, `:`-separated; no `*` = 1 epoch)."""
        entries = []
        for part in str(text).split(":"):
            match = re.fullmatch(r"\s*([^*\s]+)\s*(?:\*\s*([^\s]+)\s*)?", part)
            if match is None:
                raise SchemaError(f"cannot read schedule entry '{part.strip()}'", span, key=key,
                                  hint="write value*epochs entries separated by ':', "
                                       "e.g. 0.01*2:0.005")
            value_text, count_text = match.groups()
            try:
                value = kind(value_text)
            except ValueError:
                raise SchemaError(f"schedule value '{value_text}' is not a number", span,
                                  key=key) from None
            count = None
            if count_text is not None:
                if not count_text.isdigit() or int(count_text) < 1:
                    raise SchemaError(f"schedule entry '{part.strip()}': the number of epochs "
                                      "must be a whole number >= 1", span, key=key)
                count = int(count_text)
            entries.append((value, count))
        # An entry without a count holds for one epoch (the last one repeats in any case).
        entries = [(v, 1 if c is None else c) for v, c in entries[:-1]] + entries[-1:]
        return cls(entries, span=span, key=key)

    def value(self, epoch: int):
        if epoch < 1:
            raise ValueError(f"epochs are 1-based, got {epoch}")
        for (value, _), end in zip(self.entries, self._ends):
            if epoch <= end:
                return value
        return self.entries[-1][0]

    def values(self):
        """Every value that occurs (for validation)."""
        return [value for value, _ in self.entries]

    def __repr__(self) -> str:
        parts = [f"{v}*{c}" if c is not None and i < len(self.entries) - 1 else f"{v}"
                 for i, (v, c) in enumerate(self.entries)]
        return f"Schedule({':'.join(parts)})"


class _ForeignSchedule:
    """Adapter for another module's schedule object that only promises `.value(epoch)`."""

    def __init__(self, source):
        self.source = source
        self.span = getattr(source, "span", None)
        self.key = getattr(source, "key", None)

    def value(self, epoch: int):
        return self.source.value(epoch)

    def values(self):
        """The values, when the source lists `(value, epochs)` entries; else None (checked on use)."""
        try:
            return [value for value, _ in self.source.entries]
        except (AttributeError, TypeError, ValueError):
            return None


def as_schedule(obj, *, span: Span | None = None, key: str | None = None):
    """A schedule from a Schedule, a `(value, epochs)` list, a number, or a `.value(epoch)` object."""
    if isinstance(obj, (Schedule, _ForeignSchedule)):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return Schedule.constant(obj, span=span, key=key)
    if hasattr(obj, "value") and callable(obj.value):
        return _ForeignSchedule(obj)
    if isinstance(obj, str):
        return Schedule.parse(obj, span=span, key=key)
    if isinstance(obj, (list, tuple)):
        return Schedule([tuple(entry) for entry in obj], span=span, key=key)
    raise TypeError(f"not a schedule: {obj!r}")


def _check_range(schedule, value, low: float, high: float | None, what: str,
                 high_open: bool = True) -> None:
    """Raise a SchemaError at the schedule's position when `value` is outside [low, high)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        upper = "" if high is None else (f", {high})" if high_open else f", {high}]")
        bound = f"in [{low}{upper}" if high is not None else f">= {low}"
        raise SchemaError(f"{what} must be {bound}, got {value}",
                          getattr(schedule, "span", None), key=getattr(schedule, "key", None))


def _check_all(schedule, low, high, what, high_open=True) -> None:
    values = schedule.values()
    for value in values or ():
        _check_range(schedule, value, low, high, what, high_open)


class MinibatchSizeSchedule:
    """`minibatchSize` per epoch, in samples (default 256)."""

    def __init__(self, schedule=None, *, span: Span | None = None):
        self.schedule = as_schedule(DEFAULT_MINIBATCH_SIZE if schedule is None else schedule,
                                    span=span, key="minibatchSize")
        for value in self.schedule.values() or ():
            self._check(value)

    def __call__(self, epoch: int) -> int:
        value = self.schedule.value(epoch)
        self._check(value)
        return int(value)

    def _check(self, value) -> None:
        _check_range(self.schedule, value, 1, None, "minibatchSize")
        if int(value) != value:
            raise SchemaError(f"minibatchSize must be a whole number of samples, got {value}",
                              self.schedule.span, key="minibatchSize")


def _minibatch_sizes(minibatch_size) -> MinibatchSizeSchedule:
    if isinstance(minibatch_size, MinibatchSizeSchedule):
        return minibatch_size
    return MinibatchSizeSchedule(minibatch_size)


class LearningRateSchedule:
    """The learning rate per sample for each epoch.

    Give exactly one of `per_sample` (`learningRatesPerSample`) or `per_minibatch`
    (`learningRatesPerMB`, divided by that epoch's minibatch size).
    """

    def __init__(self, *, per_sample=None, per_minibatch=None, minibatch_size=None,
                 span: Span | None = None):
        self.minibatch_size = _minibatch_sizes(minibatch_size)
        if per_sample is not None and per_minibatch is not None:
            raise SchemaError("both learningRatesPerSample and learningRatesPerMB are given",
                              span, hint="keep only one of them")
        if per_sample is None and per_minibatch is None:
            raise SchemaError("no learning rate given", span,
                              hint="set learningRatesPerSample or learningRatesPerMB")
        self.unit = "sample" if per_sample is not None else "minibatch"
        key = "learningRatesPerSample" if self.unit == "sample" else "learningRatesPerMB"
        given = per_sample if per_sample is not None else per_minibatch
        self.schedule = as_schedule(given, span=span, key=key)
        _check_all(self.schedule, 0.0, None, key)

    def per_sample(self, epoch: int) -> float:
        value = self.schedule.value(epoch)
        _check_range(self.schedule, value, 0.0, None, self.schedule.key or "learning rate")
        if self.unit == "sample":
            return float(value)
        return float(value) / self.minibatch_size(epoch)

    def per_minibatch(self, epoch: int) -> float:
        """The rate for a whole minibatch of the epoch's nominal size (for display)."""
        if self.unit == "minibatch":
            return float(self.schedule.value(epoch))
        return self.per_sample(epoch) * self.minibatch_size(epoch)


class MomentumSchedule:
    """Unit-gain momentum for each epoch, kept as a per-sample value.

    Give at most one of `per_minibatch` (`momentumPerMB`), `per_sample` (`momentumPerSample`)
    or `time_constant` (`momentumAsTimeConstant`, in samples); with none, `momentumPerMB = 0.9`.
    """

    def __init__(self, *, per_minibatch=None, per_sample=None, time_constant=None,
                 minibatch_size=None, span: Span | None = None):
        self.minibatch_size = _minibatch_sizes(minibatch_size)
        given = [(k, v) for k, v in (("momentumPerMB", per_minibatch),
                                     ("momentumPerSample", per_sample),
                                     ("momentumAsTimeConstant", time_constant)) if v is not None]
        if len(given) > 1:
            raise SchemaError(f"both {given[0][0]} and {given[1][0]} are given", span,
                              hint="give momentum one way only")
        if not given:
            given = [("momentumPerMB", DEFAULT_MOMENTUM_PER_MB)]
        self.key, value = given[0]
        self.unit = {"momentumPerMB": "minibatch", "momentumPerSample": "sample",
                     "momentumAsTimeConstant": "time_constant"}[self.key]
        self.schedule = as_schedule(value, span=span, key=self.key)
        if self.unit == "time_constant":
            _check_all(self.schedule, 0.0, None, self.key)
        else:
            _check_all(self.schedule, 0.0, 1.0, self.key)

    def per_sample(self, epoch: int) -> float:
        value = self.schedule.value(epoch)
        if self.unit == "time_constant":
            _check_range(self.schedule, value, 0.0, None, self.key)
            return 0.0 if value == 0 else math.exp(-1.0 / float(value))
        _check_range(self.schedule, value, 0.0, 1.0, self.key)
        if self.unit == "sample":
            return float(value)
        return float(value) ** (1.0 / self.minibatch_size(epoch))

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
