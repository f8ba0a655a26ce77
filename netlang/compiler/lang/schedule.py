"""Per-epoch schedules as CNTK writes them: `0.01*2:0.005` = 0.01 for epochs 1-2, then 0.005.

`Schedule` is the one schedule type of netlang. The schema's `Scheduled` field type makes it from
the unevaluated expression (`lr*2:lr/10`) or from CNTK's text form (`"0.01*2:0.005"`, read by
`parse_schedule_text`, the one text parser); the settings carry it, and the runtime's learning-rate,
momentum and minibatch-size schedules read their values from it.
"""
from __future__ import annotations

from dataclasses import dataclass

from netlang.compiler.lang.plain import describe_value, format_number, is_number, parse_float_text


class ScheduleError(ValueError):
    """A schedule that cannot be read; the schema reports it at the setting's position."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Schedule:
    """`entries` are (value, epochs) pairs; the last entry's epochs is None when it was written
    without a count ("the rest"). Past the end, the last value repeats."""

    entries: tuple

    def value(self, epoch: int):
        """The value for the 1-based `epoch`."""
        if epoch < 1:
            raise ValueError(f"epochs are counted from 1, got {epoch}")
        seen = 0
        for value, count in self.entries:
            seen += 1 if count is None else count
            if epoch <= seen:
                return value
        return self.entries[-1][0]

    @property
    def values(self) -> list:
        return [value for value, _ in self.entries]

    @classmethod
    def constant(cls, value) -> "Schedule":
        return cls(((value, None),))

    @classmethod
    def of(cls, value) -> "Schedule":
        """A schedule as it is, or a number as the schedule that always gives it."""
        return value if isinstance(value, Schedule) else cls.constant(value)

    def to_plain(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return ":".join(format_number(value) if count in (None, 1) else f"{format_number(value)}*{count}"
                        for value, count in self.entries)


def epoch_count(count) -> int:
    """The `epochs` of a `value*epochs` entry: a whole number >= 1."""
    if not is_number(count) or count != int(count) or count < 1:
        raise ScheduleError(f"the number of epochs in 'value*epochs' must be a whole number >= 1, got "
                            f"{describe_value(count)}",
                            hint="write a product as one number (e.g. 0.08) or compute it in a variable")
    return int(count)


def parse_schedule_text(text: str) -> list[tuple]:
    """The (value, epochs) entries of CNTK's text form `0.01*2:0.005`: `:`-separated entries
    `value` or `value*epochs`; an entry without a count holds for one epoch, the last one for the rest."""
    parts = [p.strip() for p in text.split(":")]
    entries = []
    for i, part in enumerate(parts):
        value_text, star, count_text = part.partition("*")
        value = parse_float_text(value_text)
        count = parse_float_text(count_text) if star else None
        if value is None or (star and count is None):
            raise ScheduleError(f"cannot read schedule entry '{part}' in \"{text}\"",
                                hint="a schedule is value or value*epochs, separated by ':' (0.01*2:0.005)")
        if star:
            count = epoch_count(count)
        elif i < len(parts) - 1:
            count = 1
        entries.append((value, count))
    return entries
