"""Where the time of a training step goes, per rank (`netlang train --profile`).

    profile = StepProfile(enabled=True)
    with profile.phase("read"): ...        # phases nest: time is charged to the innermost one
    profile.switch("backward")             # the running phase becomes another (forward → backward)
    profile.seconds_per_step() -> {phase: seconds}    profile.reset()

The phases of a step:

    read         the reader's minibatch and turning it into the network's inputs
    forward      the forward pass
    backward     the backward pass (less what its gradient hooks spend exchanging gradients)
    quantize     k-bit quantisation, packing and their inverses (1-bit SGD)
    communicate  starting exchanges and driving them on, copies to and from the host
    wait         blocked until the other workers' data has arrived
    update       the learner (and the block methods' local bookkeeping)
    other        the rest of the loop: totals, reports, checkpoints

`other` is the time between `reset()` and the reading that no phase claimed. A disabled profile
hands out one shared do-nothing context, so an unprofiled step pays one attribute lookup per phase.
"""
from __future__ import annotations

import contextlib
import time

PHASES = ("read", "forward", "backward", "quantize", "communicate", "wait", "update", "other")

_NOTHING = contextlib.nullcontext()


class StepProfile:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.reset()

    def reset(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.steps = 0
        self._running: list[str] = []     # the phases entered and not left, innermost last
        self._since = time.perf_counter()  # when the innermost phase last started to run
        self._started = self._since

    def phase(self, name: str):
        """A context charging its time (less that of phases inside it) to `name`."""
        return _Phase(self, name) if self.enabled else _NOTHING

    def switch(self, name: str) -> None:
        """Charge the running phase up to now, and go on in `name` instead."""
        if self.enabled and self._running:
            self._charge()
            self._running[-1] = name

    def step_done(self) -> None:
        self.steps += 1

    def seconds_per_step(self) -> dict[str, float]:
        """Each phase's seconds per step since `reset()`; `other` is what no phase claimed."""
        elapsed = time.perf_counter() - self._started
        seconds = dict(self.seconds)
        seconds["other"] = max(0.0, elapsed - sum(seconds.values()))
        steps = max(self.steps, 1)
        return {name: value / steps for name, value in seconds.items()}

    def _enter(self, name: str) -> None:
        if self._running:
            self._charge()
        else:
            self._since = time.perf_counter()
        self._running.append(name)

    def _leave(self) -> None:
        self._charge()
        self._running.pop()

    def _charge(self) -> None:
        now = time.perf_counter()
        self.seconds[self._running[-1]] += now - self._since
        self._since = now


class _Phase:
    __slots__ = ("profile", "name")

    def __init__(self, profile: StepProfile, name: str):
        self.profile, self.name = profile, name

    def __enter__(self):
        self.profile._enter(self.name)
        return self

    def __exit__(self, *exc) -> None:
        self.profile._leave()


def format_profile(epoch: int, per_rank: list[dict[str, float]]) -> str:
    """The per-rank table `--profile` prints after an epoch: milliseconds per step by phase."""
    width = max(len(p) for p in PHASES) + 1
    head = f"profile of epoch {epoch}, ms per step:" + "".join(f"{p:>{width}}" for p in PHASES) + f"{'total':>{width}}"
    lines = [head]
    label = len("profile of epoch , ms per step:") + len(str(epoch))
    for rank, phases in enumerate(per_rank):
        cells = "".join(f"{phases[p] * 1e3:>{width}.3f}" for p in PHASES)
        lines.append(f"{f'rank {rank}':>{label}}{cells}{sum(phases.values()) * 1e3:>{width}.3f}")
    return "\n".join(lines)
